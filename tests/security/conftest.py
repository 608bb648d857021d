"""Markers of the security and reliability suite (its servers: `make_server`, `module_server_factory`,
from tests/support/fixtures.py)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "security: security and reliability promises (tests/security, SECURITY.md)")
    config.addinivalue_line("markers", "load: many concurrent calls against one server (runs in `make test`, ~30 s)")
    config.addinivalue_line("markers", "faults: kill -9, full disk, failing encoders")
