"""Open WebUI under systemd: its own user and venv, data under data_root (never touched by upgrades), the vLLM
backend through OPENAI_API_BASE_URL, offline settings, auth on and signup limited to the first admin."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from operations import python_venv
from operations.context import Context
from operations.render import template
from operations.shared_ops import NEW_SECRET

START_TIMEOUT = 600


@operation()
def session_secret(config_root: str):
    """Generate Open WebUI's WEBUI_SECRET_KEY once, on the host, into a root-only env file, with vLLM's API key
    (OPENAI_API_KEY) copied from vLLM's file on the host.

    + config_root: where ``open-webui.secret.env`` and ``vllm.secret.env`` live (0600 root)"""
    path, vllm = f"{config_root}/open-webui.secret.env", f"{config_root}/vllm.secret.env"
    if host.get_fact(File, path=path):
        host.noop("Open WebUI session secret exists (root-only, kept)")
        return
    yield (f"umask 077 && k=$(sed -n 's/^VLLM_API_KEY=//p' {vllm}) && [ -n \"$k\" ] && "
           f"{{ [ -s {path} ] || printf 'WEBUI_SECRET_KEY=%s\\nOPENAI_API_KEY=%s\\n' \"$({NEW_SECRET})\" \"$k\" > {path}; }} && "
           f"chmod 600 {path}")


def env_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(config_root=s.config_root, data_root=s.data_root, vllm_connect=ctx.connect(s.vllm_host),
                vllm_port=s.vllm_port, enable_signup=s.openwebui_enable_signup)


def unit_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(version=s.openwebui_version, config_root=s.config_root, data_root=s.data_root,
                venv=f"{s.install_root}/open-webui/current", host=s.openwebui_host, port=s.openwebui_port,
                probe=ctx.probe, webui_connect=ctx.connect(s.openwebui_host), start_timeout=START_TIMEOUT)


@deploy("Open WebUI service")
def ensure(ctx: Context) -> list:
    """Returns the operations whose change means Open WebUI restarted (verify waits for it then)."""
    s = ctx.s
    files.directory(name="Open WebUI data (kept across upgrades)", path=f"{s.data_root}/open-webui",
                    user="llmhost-webui", group="llmhost-webui", mode="750")
    secret = session_secret(name="Session secret (generated on the host, root-only)", config_root=s.config_root)
    root = f"{s.install_root}/open-webui"
    venv = python_venv.venv(name=f"Open WebUI {s.openwebui_version} venv", root=root, python=s.openwebui_python,
                            uv=ctx.uv, requirements=[f"open-webui=={s.openwebui_version}",
                                                     *s.openwebui_extra_requirements],
                            index_url=s.pip_index_url, find_links=s.pip_find_links, env=ctx.download_env)
    env = files.template(create_remote_dir=False, name="Open WebUI environment (no secrets)",
                         src=template("open-webui.env.j2"), dest=f"{s.config_root}/open-webui.env", mode="644",
                         **env_vars(ctx))
    unit = files.template(create_remote_dir=False, name="open-webui.service", src=template("open-webui.service.j2"),
                          dest="/etc/systemd/system/open-webui.service", mode="644", **unit_vars(ctx))
    changes = [secret, venv, env, unit]
    systemd.daemon_reload(name="Reload systemd (open-webui.service changed)", _if=unit.did_change)
    systemd.service(name="Open WebUI restarted (only when its unit, env, secret or venv changed)",
                    service="open-webui.service", running=True, restarted=True, _if=any_changed(*changes))
    systemd.service(name="Open WebUI running and enabled", service="open-webui.service", running=True,
                    enabled=True)
    return changes
