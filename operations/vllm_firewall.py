"""vLLM's port on a fleet's GPU host, admitted only from the UI hosts that send to it (nftables, the distribution's
package). One box keeps vLLM on loopback and gets no rules.

The rules are a table of their own (``inet llmhost_vllm``), loaded by ``llmhost-firewall.service`` after
``nftables.service`` (whose /etc/nftables.conf flushes the ruleset at boot): the host's own rules are never touched.
Loopback keeps access (the probe, and a UI on the same box)."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from operations.context import Context
from operations.render import rendered
from operations.shared_ops import skipped

UNIT = "/etc/systemd/system/llmhost-firewall.service"


def rules_vars(ctx: Context) -> dict:
    v4 = [a for a in ctx.clients if ":" not in a]
    v6 = [a for a in ctx.clients if ":" in a]
    return dict(port=ctx.s.vllm_port, v4=v4, v6=v6)


@deploy("vLLM firewall")
def ensure(ctx: Context):
    s = ctx.s
    if not ctx.serves_vllm or not ctx.clients:
        skipped(name="vLLM firewall (skipped: vLLM serves no other host)",
                reason="no UI host of another machine sends to this vLLM: nothing to admit")
        return
    apt.packages(name="nftables (the distribution's package)", packages=["nftables"], no_recommends=True,
                 update=True, cache_time=86400, _env=ctx.download_env)
    rules = files.put(create_remote_dir=False, name=f"vLLM port {s.vllm_port}: only from {', '.join(ctx.clients)}",
                      src=rendered("llmhost-vllm.nft.j2", **rules_vars(ctx)),
                      dest=f"{s.config_root}/vllm.nft", mode="600")
    unit = files.put(create_remote_dir=False, name="llmhost-firewall.service",
                     src=rendered("llmhost-firewall.service.j2", rules=f"{s.config_root}/vllm.nft"),
                     dest=UNIT, mode="644")
    systemd.daemon_reload(name="Reload systemd (llmhost-firewall.service changed)", _if=unit.did_change)
    systemd.service(name="Rules loaded again (only when they changed)", service="llmhost-firewall.service",
                    running=True, restarted=True, _if=any_changed(rules, unit))
    systemd.service(name="Firewall rules loaded and enabled at boot", service="llmhost-firewall.service",
                    running=True, enabled=True)
