"""Model weights: the pinned snapshot of model_repo in a models directory owned by the vLLM user.

huggingface_hub (in a small tools venv on the host, which also carries uv) downloads; the repo and revision were
already resolved on the controller by preflight, so an unknown repo never reaches the host.
"""

from __future__ import annotations

import os

import shlex

from pyinfra import host
from pyinfra.api import deploy, operation

from operations.context import Context, completion_marker, snapshots_to_prune
from operations.facts import ModelSnapshots
from operations.shared_ops import fetch_command, secret_file, skipped, snapshot


@operation()
def pruned(models_dir: str, keep: int, repo: str, commit: str, tools_python: str):
    """Ensure at most ``keep`` snapshots stay under ``models_dir``: the serving one (repo@commit) always, then the
    most recently fetched; older ones are deleted with huggingface_hub's own cache cleaner (revisions and the blobs
    only they use), then their markers.

    + models_dir: where the completion markers and the HF cache (``hub/``) are
    + keep: models_keep (>= 1)
    + repo, commit: the snapshot this run serves
    + tools_python: the tools venv's python (huggingface_hub)"""
    gone = snapshots_to_prune(host.get_fact(ModelSnapshots, models_dir=models_dir), keep, (repo, commit))
    if not gone:
        host.noop(f"at most {keep} snapshot(s) under {models_dir}: nothing to prune")
        return
    clean = ("import sys; from huggingface_hub import scan_cache_dir; "
             "scan_cache_dir(sys.argv[1]).delete_revisions(*sys.argv[2:]).execute()")
    yield (f"{tools_python} -c {shlex.quote(clean)} {models_dir}/hub " + " ".join(d["commit"] for d in gone))
    yield "rm -f " + " ".join(completion_marker(models_dir, d["repo"], d["commit"]) for d in gone)



@deploy("Model weights")
def ensure(ctx: Context):
    s = ctx.s
    if not ctx.serves_vllm:
        skipped(name="Weights (skipped: a UI host of the fleet)", reason="this host serves no vLLM: no weights here")
        return None
    token = os.environ.get(s.hf_token_env)
    if token:
        secret_file(name="HF token (root-only)", path=f"{s.config_root}/hf-token", content=token + "\n")
    # Before the fetch, so the space it frees is there for the new snapshot (preflight's disk check counts it).
    pruned(name=f"Older snapshots pruned (models_keep={s.models_keep}; the one to serve is kept)",
           models_dir=ctx.models_dir, keep=s.models_keep, repo=s.model_repo, commit=ctx.model_commit,
           tools_python=f"{ctx.tools}/bin/python")
    return snapshot(name=f"Weights {s.model_repo}@{ctx.model_commit[:12]}", marker=ctx.snapshot_marker,
                    fetch=fetch_command(ctx, s.model_repo, ctx.model_commit, ctx.snapshot_marker,
                                        f"{ctx.models_dir}/hub"),
                    owner="llmhost-vllm", cache_dir=f"{ctx.models_dir}/hub")
