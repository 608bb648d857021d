"""Files replaced whole (``replace_text``): written under a temporary name of their own, then renamed.

A reader sees the old content or the new, never a part. The temporary name is the writer's own
(random), so two writers of one file at once, two workers, or a restarted process beside the
uploads of the one it replaced, never rename each other's temporary file away; the last rename wins.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["replace_text"]


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; the temporary file is removed if the write fails."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
