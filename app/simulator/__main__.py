"""``python -m app.simulator``: one simulated call, with the flags of ``callscribe simulate``."""

from __future__ import annotations

import argparse
import sys

from app.simulator.cli import add_arguments, main_from_args

if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m app.simulator", description="Simulate one Twilio call.")
    add_arguments(_parser)
    sys.exit(main_from_args(_parser.parse_args()))
