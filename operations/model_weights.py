"""Model weights: the pinned snapshot of model_repo in a models directory owned by the vLLM user.

huggingface_hub (in a small tools venv on the host, which also carries uv) downloads; the repo and revision were
already resolved on the controller by preflight, so an unknown repo never reaches the host.
"""

from __future__ import annotations

import os
import shlex

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.operations import files

from operations.facts import SnapshotFiles
from operations.context import Context
from operations.render import template
from operations.shared_ops import secret_file, skipped



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
    yield fetch
    yield f"chown -R {owner}:{owner} {cache_dir} && chmod -R g+rX {cache_dir}"


@deploy("Model weights")
def ensure(ctx: Context):
    s = ctx.s
    if not ctx.serves_vllm:
        skipped(name="Weights (skipped: a UI host of the fleet)", reason="this host serves no vLLM: no weights here")
        return None
    token = os.environ.get(s.hf_token_env)
    if token:
        secret_file(name="HF token (root-only)", path=f"{s.config_root}/hf-token", content=token + "\n")
    fetcher = f"{s.install_root}/bin/llmhost-fetch-model"
    files.template(create_remote_dir=False, name="Weights fetcher", src=template("fetch_model.py.j2"), dest=fetcher,
                   mode="755", tools_python=f"{ctx.tools}/bin/python", cache_dir=f"{ctx.models_dir}/hub")
    env = {**ctx.download_env, "HF_ENDPOINT": s.hf_endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_TOKEN_PATH": f"{s.config_root}/hf-token"}
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    fetch = f"{prefix} {fetcher} {s.model_repo} {ctx.model_commit} {ctx.snapshot_marker}"
    return snapshot(name=f"Weights {s.model_repo}@{ctx.model_commit[:12]}", marker=ctx.snapshot_marker,
                    fetch=fetch, owner="llmhost-vllm", cache_dir=f"{ctx.models_dir}/hub")
