"""The router on a fleet's UI host: LiteLLM's proxy in front of the fleet's vLLM hosts (one model_name, several
deployments; a failed request is retried on another host, and a failing host is cooled down). Open WebUI talks only
to it, on loopback. Its own user, venv (blue/green), hardened unit; its master key is generated on the host and the
fleet's vLLM key comes from the controller's environment into a root-only file."""

from __future__ import annotations

import os

from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from operations import python_venv
from operations.context import Context
from operations.core import boundary
from operations.render import rendered
from operations.shared_ops import generated_secret, secret_file, skipped

USER = "llmhost-router"


def config_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(backends=ctx.backends, num_retries=s.router_num_retries)


def unit_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(version=s.router_litellm_version, backends=len(ctx.backends), config_root=s.config_root,
                data_root=s.data_root, venv=f"{s.install_root}/router/current",
                config=f"{s.install_root}/router/config.yaml", port=s.router_port, probe=ctx.probe,
                health=ctx.api.health)


@deploy("Router (LiteLLM)")
def ensure(ctx: Context) -> list:
    """Returns the operations whose change means the router restarted."""
    s = ctx.s
    if not ctx.routed:
        skipped(name="Router (skipped: Open WebUI talks to this host's vLLM)",
                reason="no other host's vLLM behind this UI: no router needed")
        return []
    server.group(name=f"Group {USER}", group=USER, system=True)
    server.user(name=f"System user {USER}", user=USER, group=USER, system=True, home=f"{s.data_root}/router",
                create_home=False, shell="/usr/sbin/nologin")
    files.directory(name="Router state directory", path=f"{s.data_root}/router", user=USER, group=USER, mode="750")
    changes = [
        generated_secret(name="Router master key (generated on the host, root-only)",
                         path=f"{s.config_root}/router.secret.env", variable="LITELLM_MASTER_KEY", prefix="sk-"),
        secret_file(name=f"The fleet's vLLM key for the router (${s.vllm_api_key_env}, root-only)",
                    path=f"{s.config_root}/router-backends.secret.env",
                    content=boundary.env_file({"VLLM_API_KEY": os.environ[s.vllm_api_key_env]},
                                              f"${s.vllm_api_key_env}")),
        python_venv.venv(name=f"LiteLLM {s.router_litellm_version} venv", root=f"{s.install_root}/router",
                         python="3.11", uv=ctx.uv, requirements=[f"litellm[proxy]=={s.router_litellm_version}"],
                         index_url=s.pip_index_url, find_links=s.pip_find_links, env=ctx.download_env),
        files.put(create_remote_dir=False, name=f"Router config: {len(ctx.backends)} vLLM hosts (no secrets)",
                  src=rendered("router.yaml.j2", **config_vars(ctx)),
                  dest=f"{s.install_root}/router/config.yaml", mode="644"),
    ]
    unit = files.put(create_remote_dir=False, name="llmhost-router.service",
                     src=rendered("llmhost-router.service.j2", **unit_vars(ctx)),
                     dest="/etc/systemd/system/llmhost-router.service", mode="644")
    changes.append(unit)
    systemd.daemon_reload(name="Reload systemd (llmhost-router.service changed)", _if=unit.did_change)
    systemd.service(name="Router restarted (only when its config, unit, keys or venv changed)",
                    service="llmhost-router.service", running=True, restarted=True, _if=any_changed(*changes))
    systemd.service(name="Router running and enabled", service="llmhost-router.service", running=True, enabled=True)
    return changes
