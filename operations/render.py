"""The one way templates are found and rendered: templates/*.j2 (files) and systemd/*.j2 (units), Jinja2 with
StrictUndefined. Components pass template(name) to files.template; tests render the same files with the same
variables (each component's *_vars(ctx) functions) and assert the lines that matter.

A template writes a string only through a named filter of operations/core/boundary.py, the one place that quotes
values for each kind of file: ``env`` (an EnvironmentFile value), ``exec`` (a word of a unit's command line),
``unit`` (another unit setting), ``token`` / ``tokens`` (bare words of Caddyfile / nftables), ``comment`` (text in
a comment line), ``tojson`` (JSON and YAML). Any other string reaching ``{{ }}`` stops the render (``finalize``), so a
raw interpolation cannot return."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from operations.core import boundary

ROOT = Path(__file__).resolve().parent.parent
DIRS = (ROOT / "templates", ROOT / "systemd")


class RawValueError(boundary.BoundaryError):
    """A template wrote a string without a boundary filter."""


def _finalize(value):
    if isinstance(value, str) and not isinstance(value, (boundary.Quoted, Markup)):
        raise RawValueError(f"template writes {value!r} without a quoting filter (env, exec, unit, token, tokens, "
                            "comment, tojson)")
    return value


def template(name: str) -> str:
    for d in DIRS:
        if (d / name).is_file():
            return str(d / name)
    raise FileNotFoundError(f"template {name} is in neither templates/ nor systemd/")


def environment() -> Environment:
    """The Jinja environment of every template: StrictUndefined, the boundary's filters, the raw-string guard."""
    env = Environment(loader=FileSystemLoader([str(d) for d in DIRS]), undefined=StrictUndefined,
                      keep_trailing_newline=True, finalize=_finalize)
    env.filters.update(env=lambda v: boundary.env_value(v, "template value"),
                       exec=lambda v: boundary.exec_word(v, "template value"),
                       unit=lambda v: boundary.unit_value(v, "template value"),
                       token=lambda v: boundary.token(v, "template value"),
                       tokens=lambda vs: boundary.Quoted(", ".join(boundary.token(v, "template value") for v in vs)),
                       comment=lambda v: boundary.comment(v, "template value"))
    return env


def render(name: str, **variables) -> str:
    return environment().get_template(name).render(**variables)


def rendered(name: str, **variables) -> StringIO:
    """A template rendered here, as the file ``files.put`` uploads (pyinfra's files.template has no way to add
    filters to its Jinja environment)."""
    return StringIO(render(name, **variables))
