"""The layer contract of DESIGN.md, read from the imports (`ast`, no import is executed).

`web → call → recording / agent → audio`, with each transport's sans-I/O protocol (`twilio`,
`micdrop`) used only by its shell in `web` and by the simulator; only `web` (with `main.py` and
`cli.py`, which build and serve the app) knows FastAPI or Starlette. A rule about a package that
does not exist yet (`call`, `micdrop`, `storage`) holds trivially and applies as soon as it does.
Every core module says what it owns in its docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
CORE = ["twilio", "micdrop", "audio", "recording", "agent", "call", "storage"]

# Top-level modules that import nothing of ours (checked below): any layer may use them.
SHARED = {"cancellation", "close_codes", "threads"}

# The sans-I/O protocols at the bottom: they may import themselves, `audio` (the codecs) and SHARED.
ONLY = {
    "audio": {"audio"},
    "twilio": {"twilio", "audio"},
    "micdrop": {"micdrop", "audio"},
}

# What a layer must not import: what sits above it, and what it must not know about.
FORBIDDEN = {
    "recording": {"agent", "call", "web", "simulator"},  # no assistant, nothing above it
    "agent": {"call", "web", "simulator"},
    "call": {"web", "simulator"},  # the session sees a transport Protocol, not a shell
    "storage": {"agent", "call", "web", "simulator"},
}
TRANSPORTS = {"twilio", "micdrop"}
TRANSPORT_USERS = {"web", "simulator"}  # each transport's shell in web, and the simulator
EDGE = {"web", "main", "cli"}  # the only ones that import FastAPI/Starlette or app.web

# Known violations, each an exact (module under app/, imported module) pair with its reason. A
# new violation fails the test; so does an entry here that no longer occurs (delete it).
ALLOWED: dict[tuple[str, str], str] = {}


def _unit(path: Path) -> str:
    """The layer a file of app/ belongs to: its package (`recording`) or, at the top, its stem (`main`)."""
    rel = path.relative_to(APP)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (lazy and TYPE_CHECKING imports too), relative ones resolved.
    `from app import x` counts as importing `app.x`."""
    package = ".".join(("app",) + path.relative_to(APP).parent.parts)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(x for x in (base, node.module) if x)
            if module == "app":
                out |= {f"app.{a.name}" for a in node.names}
            else:
                out.add(module)
    return out


def _ours(module: str) -> str | None:
    """The layer an imported module belongs to, or None when it is not ours."""
    parts = module.split(".")
    return parts[1] if parts[0] == "app" and len(parts) > 1 else None


def _files() -> list[Path]:
    return sorted(p for p in APP.rglob("*.py") if "__pycache__" not in p.parts)


def _violations() -> dict[tuple[str, str], str]:
    """Every (file, imported module) that breaks a rule, with the rule it breaks."""
    found: dict[tuple[str, str], str] = {}
    for path in _files():
        unit, rel = _unit(path), str(path.relative_to(APP))
        for module in _imports(path):
            top, layer = module.split(".")[0], _ours(module)
            rule = None
            if top in ("fastapi", "starlette") and unit not in EDGE:
                rule = "only app/web, main.py and cli.py import FastAPI or Starlette"
            elif layer is None or layer == unit or layer in SHARED:
                continue
            elif layer == "web" and unit not in EDGE:
                rule = "nothing below app/web imports it"
            elif unit in ONLY and layer not in ONLY[unit]:
                rule = f"app/{unit} imports only {sorted(ONLY[unit])} of ours"
            elif layer in TRANSPORTS and unit not in TRANSPORT_USERS:
                rule = f"a transport's sans-I/O protocol is used only by {sorted(TRANSPORT_USERS)}"
            elif layer in FORBIDDEN.get(unit, ()):
                rule = f"app/{unit} imports none of {sorted(FORBIDDEN[unit])}"
            if rule:
                found[(rel, module)] = rule
    return found


def test_the_layers_import_only_downwards():
    new = {pair: rule for pair, rule in _violations().items() if pair not in ALLOWED}
    assert not new, "\n".join(f"app/{f} imports {m}: {rule}" for (f, m), rule in sorted(new.items()))


def test_the_allow_list_holds_only_violations_that_still_exist():
    stale = set(ALLOWED) - set(_violations())
    assert not stale, f"fixed, so delete from ALLOWED: {sorted(stale)}"


def test_shared_modules_import_nothing_of_ours():
    for name in SHARED:
        path = APP / f"{name}.py"
        if path.exists():
            assert not [m for m in _imports(path) if _ours(m)], f"app/{name}.py is in SHARED but imports ours"


@pytest.mark.parametrize("source, module, rule", [
    ("recording/x.py", "app.twilio.events", "transport"),
    ("recording/x.py", "app.agent.session", "recording"),
    ("call/x.py", "app.web.deps", "below app/web"),
    ("audio/x.py", "app.recording.track", "app/audio imports only"),
    ("twilio/x.py", "app.config", "app/twilio imports only"),
    ("agent/x.py", "starlette.websockets", "FastAPI or Starlette"),
    ("simulator/x.py", "fastapi", "FastAPI or Starlette"),
])
def test_the_check_catches_a_violation(tmp_path, monkeypatch, source, module, rule):
    """The rules fire: a planted import in a copy of the layout is reported."""
    fake = tmp_path / "app"
    (fake / source).parent.mkdir(parents=True)
    (fake / source).write_text(f'"""x."""\nfrom {module} import y\n')
    monkeypatch.setitem(globals(), "APP", fake)
    found = _violations()
    assert list(found) == [(source, module)]
    assert rule in found[(source, module)]


def test_twilio_may_use_audio_and_shared_modules(tmp_path, monkeypatch):
    fake = tmp_path / "app"
    (fake / "twilio").mkdir(parents=True)
    (fake / "twilio" / "x.py").write_text("from app.audio import mulaw\nfrom app import close_codes\nfrom . import events\n")
    monkeypatch.setitem(globals(), "APP", fake)
    assert _violations() == {}


def test_every_core_module_says_what_it_owns():
    missing = [str(p.relative_to(APP)) for pkg in CORE for p in sorted((APP / pkg).rglob("*.py"))
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, missing
