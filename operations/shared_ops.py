"""Custom operations more than one component uses."""

from __future__ import annotations

import hashlib
import os
import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File, Sha256File
from pyinfra.operations import files

from operations.context import Context
from operations.core import boundary
from operations.facts import AptHolds, DpkgVersion, SnapshotFiles

PROGRESS_S = 30  # long downloads print where they are at least this often


class ShownCommand(StringCommand):
    """A command whose output pyinfra prints as it comes, in its default output (a long download's progress lines);
    other commands' output is shown only with -vvv."""

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        return host.run_shell_command(self, print_output=True, print_input=state.print_input, **connector_arguments)


def with_progress(command: str, label: str, directory: str) -> str:
    """``command`` with a monitor that prints, every PROGRESS_S seconds, how much ``directory`` (a download cache;
    a shell word, evaluated once) has grown and at what rate; the command's own exit status is kept."""
    return (f"d={directory}; s0=$(du -sm \"$d\" 2>/dev/null | cut -f1); t0=$(date +%s); "
            f"( while sleep {PROGRESS_S}; do kill -0 $$ 2>/dev/null || exit 0; "
            f"n=$(( $(du -sm \"$d\" 2>/dev/null | cut -f1) - ${{s0:-0}} )); "
            f"t=$(( $(date +%s) - t0 )); echo \"llmhost: {label}: $n MiB downloaded in $t s, $(( n / t )) MiB/s\"; "
            f"done ) & m=$!; ( {command} ); rc=$?; kill $m 2>/dev/null; exit $rc")


# A secret made by the host's own CSPRNG inside the command: it never crosses the wire, a command line or a log.
NEW_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


@operation()
def generated_secret(path: str, variable: str, prefix: str = ""):
    """Ensure the root-only (0600) env file ``path`` holds ``variable``: a secret made once on the host by its own
    CSPRNG inside the command, so it never crosses the wire, a command line or a log; an existing file is kept (a
    re-run never rotates it).

    + path: the env file (in config_root, 0700 root)
    + variable: the variable it defines (VLLM_API_KEY, LITELLM_MASTER_KEY)
    + prefix: put before the random part (LiteLLM wants ``sk-``)"""
    if host.get_fact(File, path=path):
        host.noop(f"{variable} exists in {path} (root-only, kept)")
        return
    path = boundary.shell_word(path)
    yield (f"umask 077 && {{ [ -s {path} ] || printf '{variable}={prefix}%s\\n' \"$({NEW_SECRET})\" > {path}; }} && "
           f"chmod 600 {path}")


@operation()
def skipped(reason: str):
    """A step that does not apply to this host: reported as a noop with its reason, never as done."""
    host.noop(reason)
    yield from ()


def gpu_step_applies(ctx: Context, step: str) -> bool:
    """GPU steps run only on Ubuntu GPU hosts; elsewhere they are reported as skipped (never as done)."""
    if not ctx.serves_vllm:
        skipped(name=f"{step} (skipped: a UI host of the fleet)",
                reason=f"this host is in ui_hosts only: no GPU, no {step} step")
        return False
    if ctx.s.driver_standin_archive:
        return True  # TEST ONLY: the stand-in archive on the GPU-less Debian test host (named in its op names)
    if not ctx.s.gpu_host:
        skipped(name=f"{step} (skipped: gpu_host=False)", reason=f"gpu_host=False: no GPU, no {step} step")
        return False
    if not ctx.ubuntu:
        skipped(name=f"{step} (skipped: not Ubuntu)",
                reason=f"{ctx.os_id} {ctx.os_version}: llmhost installs {step} on Ubuntu only")
        return False
    return True


@operation()
def held(packages: list[str]):
    """Ensure ``packages`` are on hold (apt-mark hold), so apt upgrades never move them."""
    current = host.get_fact(AptHolds)
    missing = [p for p in packages if p not in current]
    if not missing:
        host.noop(f"already held: {' '.join(packages)}")
        return
    yield boundary.shell_line(["apt-mark", "hold", *missing])


def moves(versions: dict[str, str]) -> bool:
    """Whether any of ``versions`` is not installed at its version (pinned_and_held would change packages)."""
    return any(host.get_fact(DpkgVersion, package=p) != v for p, v in versions.items())


@operation()
def pinned_and_held(versions: dict[str, str], hold: list[str] | None = None, auto: list[str] | None = None,
                    downgrade: bool = False, remove: list[str] | None = None):
    """Ensure each package is installed at exactly its version, and ``hold`` (default: the pinned packages) on hold.

    + versions: package -> Debian version (packages that move together: the container toolkit's four; a kernel,
      its NVIDIA modules and the driver's user space)
    + hold: the packages to hold afterwards (apt then never moves them; the others follow by their Depends)
    + auto: pinned packages marked automatically installed afterwards (per-kernel modules: apt marks what its
      command line names as manual, and a manual module would keep its old kernel from autoremove forever)
    + downgrade: let apt install a version older than the installed one (only for a version the user set: the
      driver set never moves backwards, and apt then refuses a downgrade rather than carry one out)
    + remove: installed packages the same apt call removes (apt's ``pkg-``): what the set replaces

    Held packages cannot be changed by apt, so a change unholds, installs the set in one apt call (which may
    downgrade where ``downgrade`` says so, and removes what conflicts with it) and holds again. When apt fails (a
    dependency not published yet), what was held before is held again and apt's exit status kept:
    unattended-upgrades never finds the set unheld, and the next run tries again."""
    hold = list(versions) if hold is None else hold
    holds = host.get_fact(AptHolds)
    pins = " ".join(f"{p}={v}" for p, v in versions.items())
    at_pins = not moves(versions)
    if at_pins and all(p in holds for p in hold):
        host.noop(f"{pins}, held")
        return
    if at_pins:  # installed as wanted, some holds missing (an install from before they were held): hold them only
        yield boundary.shell_line(["apt-mark", "hold", *(p for p in hold if p not in holds)])
        return
    release = hold + [p for p in versions if p in holds and p not in hold]
    before = [p for p in release if p in holds]
    install = boundary.shell_line(["apt-get", "install", "-y", "--no-install-recommends",
                                   *(["--allow-downgrades"] if downgrade else []),
                                   *(f"{p}={v}" for p, v in versions.items()), *(f"{p}-" for p in remove or [])])
    restore = f"{boundary.shell_line(['apt-mark', 'hold', *before])} >/dev/null; " if before else ""
    yield (f"{boundary.shell_line(['apt-mark', 'unhold', *release])} >/dev/null && "
           f"if DEBIAN_FRONTEND=noninteractive {install}; then {boundary.shell_line(['apt-mark', 'hold', *hold])}"
           + (f" && {boundary.shell_line(['apt-mark', 'auto', *auto])} >/dev/null" if auto else "") + "; "
           f"else rc=$?; {restore}exit $rc; fi")


@operation()
def secret_file(path: str, content: str):
    """Ensure a root-only (0600) file holds ``content``, compared by sha256: the value never reaches a command
    line, a diff or pyinfra's output."""
    want = hashlib.sha256(content.encode()).hexdigest()
    info = host.get_fact(File, path=path)
    if info and host.get_fact(Sha256File, path=path) == want and info.get("mode") == 600:
        host.noop(f"{path} is current (root-only)")
        return
    yield boundary.shell_all(["install", "-d", "-m", "700", os.path.dirname(path)], ["touch", path],
                             ["chmod", "600", path])
    yield FileUploadCommand(StringIO(content), path, remote_temp_filename=None)
    yield boundary.shell_all(["chown", "root:root", path], ["chmod", "600", path])


@operation()
def snapshot(marker: str, fetch: str, owner: str, cache_dir: str):
    """Ensure the pinned snapshot is complete: ``marker`` (written by the fetcher only after every file) lists each
    file and its size, and each is still there at that size; else fetch again (only what is missing moves).

    + marker: the completion marker of this repo@commit
    + fetch: the fetcher's command line
    + owner: user that owns the HF cache
    + cache_dir: the HF cache"""
    state = host.get_fact(SnapshotFiles, marker=marker)
    if state == "complete":
        host.noop(f"snapshot complete, every file at its size ({marker})")
        return
    yield ShownCommand(fetch)  # its progress lines appear as they come
    yield boundary.shell_all(["chown", "-R", f"{owner}:{owner}", cache_dir], ["chmod", "-R", "g+rX", cache_dir])


HOSTSIDE = Path(__file__).resolve().parent / "hostside"


def host_program(name: str, module: str, dest: str, values: dict) -> list:
    """Install one of llmhost's host-side programs (operations/hostside/<module>.py, a program, never a template)
    at ``dest`` and its values beside it as ``dest.json`` (JSON: the data-file boundary; no secrets, readable by
    the services that run it). Returns both operations (either changing means the program changed)."""
    return [files.put(create_remote_dir=False, name=name, src=str(HOSTSIDE / f"{module}.py"), dest=dest, mode="755"),
            files.put(create_remote_dir=False, name=f"{name}: its values ({os.path.basename(dest)}.json)",
                      src=StringIO(boundary.json_value(values) + "\n"), dest=f"{dest}.json", mode="644")]


def fetch_command(ctx: Context, repo: str, commit: str, marker: str, cache_dir: str) -> str:
    """The command line of the host's fetcher (base installs it): repo@commit into the HF cache ``cache_dir``
    through the download route (proxy, CA), the HF token file when there is one, no telemetry."""
    s = ctx.s
    env = {**ctx.download_env, "HF_ENDPOINT": s.hf_endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # its bars need a terminal: the fetcher prints its own lines
           "HF_TOKEN_PATH": f"{s.config_root}/hf-token"}
    return boundary.shell_line(["env", *(f"{k}={v}" for k, v in sorted(env.items())), f"{ctx.tools}/bin/python",
                                ctx.fetcher, repo, commit, marker, cache_dir], "the weights fetcher")
