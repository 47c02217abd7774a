"""What vLLM 0.26.0 holds on the GPU after loading a model, beyond the checkpoint's parameters (issue 17, planner).

Run on the GPU host (tools/gpu_device.sh calib), one model fixture per process (vLLM initializes its distributed
state once per process): vLLM's offline engine in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0, dummy weights, eager, a small budget), then the loaded model's parameters and
buffers by name and size, and torch's allocator counters. The planner's "weights" term is compared with vLLM's
"Model loading took" line; this names what makes up the difference instead of fitting it.
Output: /tmp/res/weights-probe-<fixture>.json.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_vllm_proof import model_dir  # noqa: E402

RES = Path("/tmp/res")


def inspect(model) -> dict:
    import torch

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    bufs = [(n, b.numel() * b.element_size(), str(b.dtype), list(b.shape)) for n, b in model.named_buffers()]
    big = sorted([b for b in bufs if b[1] >= 1 << 20], key=lambda b: -b[1])[:20]
    return {"param_bytes": params, "buffer_bytes": sum(b[1] for b in bufs), "n_buffers": len(bufs),
            "big_buffers": big, "allocated": torch.cuda.memory_allocated(),
            "reserved": torch.cuda.memory_reserved(), "max_allocated": torch.cuda.max_memory_allocated()}


def main() -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    RES.mkdir(exist_ok=True)
    from vllm import LLM

    fixture = sys.argv[1]
    d = Path("/tmp/models-probe") / fixture
    model_dir(fixture, d)
    try:
        llm = LLM(model=str(d), load_format="dummy", enforce_eager=True, max_model_len=4096,
                  gpu_memory_utilization=0.3, max_num_seqs=8)
        try:
            res = llm.apply_model(inspect)
        except Exception as exc:  # walk to the model by hand when apply_model is not there
            core = llm.llm_engine.engine_core.engine_core
            runner = core.model_executor.driver_worker.worker.model_runner
            res = [inspect(runner.get_model() if hasattr(runner, "get_model") else runner.model),
                   f"apply_model: {type(exc).__name__}: {exc}"]
    except Exception:
        res = traceback.format_exc()[-3000:]
    (RES / f"weights-probe-{fixture}.json").write_text(json.dumps({fixture: res}, indent=1, default=str))


if __name__ == "__main__":
    main()
