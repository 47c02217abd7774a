"""Model weights: the pinned snapshot of model_repo in a models directory owned by the vLLM user.

huggingface_hub (in a small tools venv on the host, which also carries uv) downloads; the repo and revision were
already resolved on the controller by preflight, so an unknown repo never reaches the host.
"""

from __future__ import annotations

import os

from pyinfra.api import deploy

from operations.context import Context
from operations.shared_ops import fetch_command, secret_file, skipped, snapshot



@deploy("Model weights")
def ensure(ctx: Context):
    s = ctx.s
    if not ctx.serves_vllm:
        skipped(name="Weights (skipped: a UI host of the fleet)", reason="this host serves no vLLM: no weights here")
        return None
    token = os.environ.get(s.hf_token_env)
    if token:
        secret_file(name="HF token (root-only)", path=f"{s.config_root}/hf-token", content=token + "\n")
    return snapshot(name=f"Weights {s.model_repo}@{ctx.model_commit[:12]}", marker=ctx.snapshot_marker,
                    fetch=fetch_command(ctx, s.model_repo, ctx.model_commit, ctx.snapshot_marker,
                                        f"{ctx.models_dir}/hub"),
                    owner="llmhost-vllm", cache_dir=f"{ctx.models_dir}/hub")
