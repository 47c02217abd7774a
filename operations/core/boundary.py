"""Where values cross into the host: one function per kind of file, each writing that file's own quoting, or
refusing (one line, naming the setting) what the file cannot carry. Nothing else in llmhost quotes a value.

- EnvironmentFiles (``env_file`` / ``env_value``): systemd's own writer's rules (src/basic/env-file.c,
  ``write_env_var``): a value that needs it goes in double quotes with ``\\ " ` $`` escaped; NUL, CR, LF and the
  other control characters cannot be carried and are refused.
- Unit command lines (``exec_line`` / ``exec_word``): systemd's command-line syntax (systemd.service(5), "Command
  lines"): a word that needs it goes in double quotes with ``\\`` and ``"`` escaped (C-style escapes are undone
  inside), ``%`` written ``%%`` (specifiers) and ``$`` written ``$$`` (variables).
- Other unit settings (``unit_value``): ``%`` written ``%%``; a trailing backslash (a continuation) is refused.
- Shell lines pyinfra runs (``shell_line``): argument lists quoted once with shlex.
- Requirement lists (``requirement``): parsed by ``packaging`` (PEP 508); a line that starts with ``-`` (an option
  of pip / uv) is refused.
- Plain tokens of other formats (Caddyfile, nftables, Prometheus: ``token``) and JSON / YAML (``json_value``).

Templates take only what these return (``Quoted``), numbers and booleans: operations/render.py refuses any other
string at render time, so a raw ``{{ value }}`` cannot come back unnoticed. Pure logic: no pyinfra import.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Iterable, Mapping

from packaging.requirements import InvalidRequirement, Requirement


class BoundaryError(ValueError):
    """A value a file cannot carry. The message is one line and names where the value came from."""


class Quoted(str):
    """A value already written in its file's syntax by this module."""


CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# systemd's write_env_var quotes a value with a control character, white space or one of SHELL_NEED_QUOTES
# ("\\`$ *?[ '()<>|&;!); this writer quotes everything outside a smaller plain set (same parse, fewer cases).
ENV_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]*$")
ENV_ESCAPE = '"\\`$'  # SHELL_NEED_ESCAPE: the characters systemd's parser unescapes inside double quotes
EXEC_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")
TOKEN = re.compile(r"^[A-Za-z0-9_@+=:,./\[\]-]+$")


def printable(value: str, what: str) -> str:
    """``value`` when it is a string of printable characters that UTF-8 can carry; else BoundaryError."""
    if not isinstance(value, str):
        raise BoundaryError(f"{what}: expected text, got {type(value).__name__} {value!r}")
    bad = CONTROL.search(value)
    if bad:
        raise BoundaryError(f"{what}: contains the control character {bad.group()!r}, which no file or command of "
                            "the host can carry intact: remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BoundaryError(f"{what}: is not valid Unicode text (a lone surrogate): remove that character") from None
    return value


# --- EnvironmentFile ---------------------------------------------------------------------------------------------
def env_value(value: str, what: str) -> Quoted:
    """The right-hand side of ``KEY=value`` in a systemd EnvironmentFile that systemd reads back as ``value``."""
    printable(value, what)
    if ENV_PLAIN.match(value):
        return Quoted(value)
    return Quoted('"' + "".join("\\" + c if c in ENV_ESCAPE else c for c in value) + '"')


def env_line(key: str, value: str, what: str) -> str:
    if not ENV_KEY.match(key):
        raise BoundaryError(f"{what}: {key!r} is not an environment variable name (letters, digits, _)")
    return f"{key}={env_value(value, what)}\n"


def env_file(pairs: Mapping[str, str], what: str) -> str:
    """A whole EnvironmentFile: one line per variable, each value quoted for systemd (the one env-file writer)."""
    return "".join(env_line(k, v, what) for k, v in pairs.items())


# --- unit files --------------------------------------------------------------------------------------------------
def exec_word(value: str, what: str) -> Quoted:
    """One word of a unit's ExecStart= (or ExecStartPost=, ...) that systemd passes on as exactly ``value``."""
    printable(value, what)
    if not EXEC_PLAIN.match(value):
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return Quoted(value.replace("%", "%%").replace("$", "$$"))


def exec_line(args: Iterable[str], what: str) -> Quoted:
    """A unit's command line from an argument list: systemd splits it back into exactly these arguments."""
    args = [str(a) for a in args]
    if not args or not args[0].startswith("/"):
        raise BoundaryError(f"{what}: a unit's command must start with an absolute path (got {args[:1]!r})")
    return Quoted(" ".join(exec_word(a, what) for a in args))


def unit_value(value: str, what: str) -> Quoted:
    """The value of a unit setting that is not a command line (Description=, a path): specifiers escaped."""
    printable(value, what)
    if value.endswith("\\"):
        raise BoundaryError(f"{what}: ends with a backslash, which continues a unit line onto the next: remove it")
    return Quoted(value.replace("%", "%%"))


# --- shell lines, requirement lists, other formats -------------------------------------------------------------
def shell_line(args: Iterable[str], what: str = "command") -> str:
    """A command line for the host's shell from an argument list, each argument quoted once."""
    return " ".join(shell_word(a, what) for a in args)


def shell_all(*commands: Iterable[str], what: str = "command") -> str:
    """Commands (each an argument list) run one after the other while each succeeds: ``a && b && c``."""
    return " && ".join(shell_line(c, what) for c in commands)


def shell_word(value: str, what: str = "command") -> str:
    """One word of a shell line (a path inside a compound command: ``[ -s PATH ] || ...``), quoted once."""
    return shlex.quote(printable(str(value), what))


def requirement(line: str, what: str) -> str:
    """A requirement line (PEP 508, parsed by ``packaging``) that pip and uv read as a requirement, never an option."""
    printable(line, what)
    if line.strip().startswith("-"):
        raise BoundaryError(f"{what}: {line!r} is an option, not a requirement: give 'name==version' (options such "
                            "as an index belong in pip_index_url / pip_find_links)")
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise BoundaryError(f"{what}: {line!r} is not a requirement ({str(exc).splitlines()[0]}): give "
                            "'name==version'") from None
    if req.url:
        raise BoundaryError(f"{what}: {line!r} names a URL: give 'name==version' from the package index")
    return str(req)


def token(value: str, what: str) -> Quoted:
    """A bare token (a host name, an address, a duration) for formats without a quoting of their own here."""
    printable(value, what)
    if not TOKEN.match(value):
        raise BoundaryError(f"{what}: {value!r} has characters this file cannot carry as one word")
    return Quoted(value)


def comment(value: str, what: str) -> Quoted:
    """Text inside a comment line: one line, backslashes doubled (an env file's comment takes a backslash as an
    escape, and one before the newline would swallow the next line)."""
    return Quoted(printable(value, what).replace("\\", "\\\\"))


def json_value(value) -> Quoted:
    """JSON (also YAML) for any value: the data-file boundary (host-side programs read such files)."""
    return Quoted(json.dumps(value, ensure_ascii=True))
