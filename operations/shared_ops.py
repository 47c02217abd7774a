"""Custom operations more than one component uses."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import operation

from operations.context import Context
from operations.facts import AptHolds

# A secret made by the host's own CSPRNG inside the command: it never crosses the wire, a command line or a log.
NEW_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


@operation()
def skipped(reason: str):
    """A step that does not apply to this host: reported as a noop with its reason, never as done."""
    host.noop(reason)
    yield from ()


def gpu_step_applies(ctx: Context, step: str) -> bool:
    """GPU steps run only on Ubuntu GPU hosts; elsewhere they are reported as skipped (never as done)."""
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
    yield f"apt-mark hold {' '.join(missing)}"
