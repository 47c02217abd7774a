"""The one way templates are found and rendered: templates/*.j2 (files) and systemd/*.j2 (units), Jinja2 with
StrictUndefined. Components pass template(name) to files.template; tests render the same files with the same
variables (each component's *_vars(ctx) functions) and assert the lines that matter."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

ROOT = Path(__file__).resolve().parent.parent
DIRS = (ROOT / "templates", ROOT / "systemd")


def template(name: str) -> str:
    for d in DIRS:
        if (d / name).is_file():
            return str(d / name)
    raise FileNotFoundError(f"template {name} is in neither templates/ nor systemd/")


def render(name: str, **variables) -> str:
    env = Environment(loader=FileSystemLoader([str(d) for d in DIRS]), undefined=StrictUndefined,
                      keep_trailing_newline=True)
    return env.get_template(name).render(**variables)
