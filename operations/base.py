"""What every later component stands on, owned here once: base packages, the two service users, llmhost's
directories (install, data, config roots), the tools venv (uv + huggingface_hub) and the probe that units and
verify share."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, pip, server

from operations.context import Context
from operations.render import template

USERS = {"llmhost-vllm": "vllm", "llmhost-webui": "open-webui"}  # user -> its directory under data_root


def probe_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(vllm_connect=ctx.connect(s.vllm_host), vllm_port=s.vllm_port,
                webui_connect=ctx.connect(s.openwebui_host), webui_port=s.openwebui_port,
                served_model_name=s.served_model_name, gpu_host=s.gpu_host, config_root=s.config_root)


@deploy("Base")
def ensure(ctx: Context):
    s = ctx.s
    apt.packages(name="Base packages (venv, curl, CA certificates)",
                 packages=["python3-venv", "ca-certificates", "curl"], no_recommends=True,
                 update=True, cache_time=86400, _env=ctx.download_env)
    for user, home in USERS.items():
        server.group(name=f"Group {user}", group=user, system=True)
        server.user(name=f"System user {user}", user=user, group=user, system=True, home=f"{s.data_root}/{home}",
                    create_home=False, shell="/usr/sbin/nologin")
    for path, owner, mode in [(s.install_root, "root", "755"), (f"{s.install_root}/bin", "root", "755"),
                              (s.data_root, "root", "755"), (ctx.models_dir, "llmhost-vllm", "750"),
                              (s.config_root, "root", "700")]:
        files.directory(name=f"Directory {path}", path=path, user=owner, group=owner, mode=mode)
    pip.virtualenv(name="Tools venv (uv, huggingface_hub)", path=ctx.tools, venv=True, python="python3",
                   _env=ctx.download_env)
    pip.packages(name="Tools: uv and huggingface_hub (pinned)", packages=[f"uv=={s.uv_version}",
                 *s.hub_tools_requirements], pip=f"{ctx.tools}/bin/pip", _env=ctx.download_env)
    files.template(create_remote_dir=False, name="Probe (health / models / completion)",
                   src=template("llmhost-probe.py.j2"), dest=ctx.probe, mode="755", **probe_vars(ctx))
