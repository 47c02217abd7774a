"""What every later component stands on, owned here once: base packages, the two service users, llmhost's
directories (install, data, config roots), the tools venv (uv + huggingface_hub) and the probe that units and
verify share."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, pip, server

from operations.context import Context
from operations.hub import FETCH_PATTERNS
from operations.shared_ops import PROGRESS_S, host_program

USERS = {"llmhost-vllm": "vllm", "llmhost-webui": "open-webui"}  # user -> its directory under data_root


def probe_vars(ctx: Context) -> dict:
    """What the probe checks on this host: the OpenAI API clients use here (the router on a routed UI host, else
    vLLM), with the key from its root-only file; Open WebUI where it runs; the GPU where vLLM runs on one."""
    s = ctx.s
    api = ctx.api
    # A headless multi-node stage serves no API: the probe checks its GPU only.
    base = None if s.headless and not ctx.serves_webui else api.base
    return dict(api=base, api_health=api.health, key_file=api.key_file, key_var=api.key_var, webui=ctx.serves_webui,
                webui_connect=ctx.connect(s.openwebui_host), webui_port=s.openwebui_port,
                served_model_name=s.served_model_name, gpu_host=s.gpu_host and ctx.serves_vllm,
                admin_file=f"{s.config_root}/open-webui.admin.env", admin_email=s.openwebui_admin_email,
                token_file=f"{s.config_root}/open-webui.probe-token")


@deploy("Base")
def ensure(ctx: Context):
    s = ctx.s
    apt.packages(name="Base packages (venv, curl, CA certificates)",
                 packages=["python3-venv", "ca-certificates", "curl"], no_recommends=True,
                 update=True, cache_time=86400, _env=ctx.download_env)
    for user, home in USERS.items():
        if (home == "vllm" and not ctx.serves_vllm) or (home == "open-webui" and not ctx.serves_webui):
            continue  # a fleet host without that role
        server.group(name=f"Group {user}", group=user, system=True)
        server.user(name=f"System user {user}", user=user, group=user, system=True, home=f"{s.data_root}/{home}",
                    create_home=False, shell="/usr/sbin/nologin")
    for path, owner, mode in [(s.install_root, "root", "755"), (f"{s.install_root}/bin", "root", "755"),
                              (s.data_root, "root", "755"), (s.config_root, "root", "700")] + (
                             [(ctx.models_dir, "llmhost-vllm", "750")] if ctx.serves_vllm else []):
        files.directory(name=f"Directory {path}", path=path, user=owner, group=owner, mode=mode)
    pip.virtualenv(name="Tools venv (uv, huggingface_hub)", path=ctx.tools, venv=True, python="python3",
                   _env=ctx.download_env)
    pip.packages(name="Tools: uv and huggingface_hub (pinned)", packages=[f"uv=={s.uv_version}",
                 *s.hub_tools_requirements], pip=f"{ctx.tools}/bin/pip", _env=ctx.download_env)
    host_program("Weights fetcher (huggingface_hub, revision-pinned)", "fetch_model", ctx.fetcher,
                 dict(progress_s=PROGRESS_S, allow=FETCH_PATTERNS))
    host_program("Probe (health / models / completion)", "probe", ctx.probe, probe_vars(ctx))
