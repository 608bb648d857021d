"""The dependency direction in DESIGN.md: nothing below app/web imports a web framework."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
CORE = ["twilio", "audio", "recording", "agent"]


@pytest.mark.parametrize("package", CORE)
def test_core_packages_do_not_import_fastapi_or_starlette_or_web(package):
    offenders = []
    for path in (APP / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in ("fastapi", "starlette") or n.startswith("app.web"):
                    offenders.append(f"{path.relative_to(APP)} imports {n}")
    assert not offenders, offenders


def test_every_core_module_says_what_it_owns():
    missing = [str(p.relative_to(APP)) for pkg in CORE for p in (APP / pkg).rglob("*.py")
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, missing
