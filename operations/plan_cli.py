"""llmhost-plan: the flag planner on its own (a card and a model's config.json, local or from a hub)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from operations.core.catalogue import fits, fits_table
from operations.core.tuning import GpuSpec, ModelSpec, PlanError, plan
from operations.core.settings import Settings
from operations.core.versions import CARDS, DEFAULT_ERA, model_family, needed_context


def load_model_config(config: str | None = None, model: str | None = None, endpoint: str | None = None,
                      token: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """config.json (+ quantize_config.json) from a local path, or from the hub with huggingface_hub."""
    if config:
        path = Path(config)
        qpath = path.with_name("quantize_config.json")
        return json.loads(path.read_text()), (json.loads(qpath.read_text()) if qpath.exists() else None)
    from operations.hub import read_json

    repo, _, rev = (model or "").partition("@")
    cfg = read_json(repo, rev or None, "config.json", endpoint, token)
    if cfg is None:
        raise PlanError(f"{repo}@{rev or 'main'} has no config.json")
    return cfg, read_json(repo, rev or None, "quantize_config.json", endpoint, token)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="llmhost-plan", description="Derive vLLM flags for a card and a model.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="local config.json (quantize_config.json beside it is read too)")
    src.add_argument("--model", help="REPO[@REV] fetched with huggingface_hub (HF_ENDPOINT / HF_TOKEN honoured)")
    src.add_argument("--fits", metavar="CARD", choices=sorted(CARDS),
                     help="every catalogue model (the setting `model`) on this card: context, chats, tools; offline")
    card = p.add_mutually_exclusive_group()
    card.add_argument("--gpu", choices=sorted(CARDS), help="a common card")
    card.add_argument("--gpu-memory-mib", type=int, help="CUDA-visible memory of one GPU in MiB")
    p.add_argument("--compute-capability", type=float, default=8.6)
    p.add_argument("--gpu-count", type=int, default=1)
    p.add_argument("--tensor-parallel-size", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--reserved-mib", type=int, default=0)
    p.add_argument("--min-concurrency", type=float, default=2.0)
    p.add_argument("--vllm-version", default=DEFAULT_ERA)
    p.add_argument("--openwebui-version", default=Settings.model_fields["openwebui_version"].default,
                   help="the context must hold this Open WebUI's own prompt (with its tool schemas for a model "
                        "family with tool calling), as the deploy plans it; 'none' for vLLM alone")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    want_json = "--json" in (argv if argv is not None else sys.argv[1:])

    def fail(msg: str) -> int:
        print(json.dumps({"error": msg}) if want_json else f"error: {msg}", file=sys.stdout if want_json else sys.stderr)
        return 2

    p.error = lambda msg: sys.exit(fail(f"{msg} (see --help)"))  # argparse's own errors: one line, exit 2
    a = p.parse_args(argv)
    try:
        from operations.core.versions import era
        try:
            era(a.vllm_version)
        except ValueError as exc:
            raise PlanError(str(exc).replace("vllm_version=", "--vllm-version ")) from None
        if a.fits:
            gpu = GpuSpec.from_card(a.fits, a.gpu_count)
            rows = fits(gpu, a.vllm_version, a.openwebui_version, a.min_concurrency)
            print(json.dumps([dict(model=f.entry.name, repo=f.entry.repo, licence=f.entry.licence, verdict=f.verdict,
                                   max_model_len=f.max_model_len, max_concurrency=round(f.max_concurrency, 2),
                                   weights_gib=round(f.weights_gib, 2)) for f in rows])
                  if a.json else fits_table(rows, gpu, a.vllm_version))
            return 0
        if a.gpu is None and a.gpu_memory_mib is None:
            raise PlanError("give the card: --gpu CARD or --gpu-memory-mib MIB")
        cfg, qcfg = load_model_config(a.config, a.model)
        if a.gpu:
            gpu = GpuSpec.from_card(a.gpu, a.gpu_count)
        else:
            gpu = GpuSpec(a.gpu_memory_mib, a.compute_capability, a.gpu_count, f"{a.gpu_memory_mib} MiB")
        result = plan(ModelSpec.from_config(cfg, qcfg), gpu, a.vllm_version, max_model_len=a.max_model_len,
                      gpu_memory_utilization=a.gpu_memory_utilization, max_num_seqs=a.max_num_seqs,
                      reserved_mib=a.reserved_mib, min_concurrency=a.min_concurrency,
                      tensor_parallel_size=a.tensor_parallel_size,
                      min_context=0 if a.openwebui_version == "none" else
                      needed_context(a.openwebui_version, bool(model_family(cfg).tool_call_parser)))
    except PlanError as exc:
        return fail(str(exc))
    except (OSError, ValueError) as exc:  # missing/unreadable/invalid config file, hub errors
        return fail(f"cannot read the model config: {exc}")
    print(json.dumps(result.to_json()) if a.json else result.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
