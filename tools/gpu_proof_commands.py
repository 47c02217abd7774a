"""Write tools/gpu_runs.json: the vLLM runs for the GPU host (tools/gpu_vllm_proof.py executes them there).

The two "deploy" runs use the deploy's own rendering: the planner's plan for the card (the H200 as recorded on the
GPU host, and an RTX 3060 12 GB), operations.vllm_service.exec_start and the templates systemd/vllm.service.j2 and
templates/vllm.env.j2. Only `--load-format dummy` is added there (no weights can reach the GPU host). The RTX 3060
budget is emulated on the big card by scaling --gpu-memory-utilization to the same number of bytes.
The calibration runs vary model, utilization and context with the era's api_server (same flags the planner
writes, values chosen to spread the terms), for the V1 memory model.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from operations.core import tuning, versions  # noqa: E402
from operations.core.settings import Settings  # noqa: E402
from operations import vllm_service  # noqa: E402
from operations.context import Context  # noqa: E402
from operations.render import render  # noqa: E402

H200_MIB = versions.cuda_visible_mib("NVIDIA H200", 143771)  # as nvidia-smi reports it on the GPU host
MODELS = REPO / "tests/fixtures/models"
SNAP = "/var/lib/llmhost/models/hub/models--astronomer--Llama-3-8B-Instruct-GPTQ-4-Bit/snapshots/" \
       "ee9e2f9003ae49425a29e73a29b59dffc8870a83"


def spec(name: str) -> tuning.ModelSpec:
    d = MODELS / name
    cfg = json.loads((d / "config.json").read_text())
    q = d / "quantize_config.json"
    return tuning.ModelSpec.from_config(cfg, json.loads(q.read_text()) if q.exists() else None)


OLD_DEFAULT = dict(vllm_version="0.26.0", model_repo="astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit",
                   model_revision="ee9e2f9003ae49425a29e73a29b59dffc8870a83")  # what the 0.26.0 proofs ran


def deploy_command(gpu: tuning.GpuSpec, fixture: str = "llama-3-8b-instruct-gptq", **settings) -> dict:
    s = Settings(**{**(OLD_DEFAULT if fixture == "llama-3-8b-instruct-gptq" else {}), **settings})
    fam = versions.chosen_family(s.vllm_tool_call_parser, json.loads((MODELS / fixture / "config.json").read_text()))
    p = tuning.plan(spec(fixture), gpu, s.vllm_version, tensor_parallel_size=s.vllm_tensor_parallel_size,
                    pipeline_parallel_size=s.vllm_nnodes,
                    min_context=versions.needed_context(s.openwebui_version, bool(fam.tool_call_parser)))
    ctx = Context(s, "ubuntu", "24.04", None, {}, p, s.model_revision, "open", family=fam)
    assert fixture != "llama-3-8b-instruct-gptq" or ctx.snapshot_path == SNAP
    unit = render("vllm.service.j2", **vllm_service.unit_vars(ctx))
    envfile = render("vllm.env.j2", **vllm_service.env_vars(ctx))
    line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    return {"unit": unit, "env": envfile, "exec_start": line[len("ExecStart="):], "plan": p.to_json(),
            "snapshot": ctx.snapshot_path, "served": s.served_model_name}


# The planner's own plans run on the GPU host (name, card, model fixture): 8, 12, 16 and 24 GB budgets, Llama 3 GPTQ
# (the default), Llama 3.1 and Qwen2.5 at 16 bits, Llama 3.2 1B with its long context.
PLANS = [
    ("plan-rtx3060-llama3-gptq", "rtx-3060-12gb", "llama-3-8b-instruct-gptq"),
    ("plan-rtx3060ti-llama3-gptq", "rtx-3060-ti", "llama-3-8b-instruct-gptq"),
    ("plan-rtx4060ti16-llama3-gptq", "rtx-4060-ti-16gb", "llama-3-8b-instruct-gptq"),
    ("plan-rtx3090-llama31-bf16", "rtx-3090", "llama-3.1-8b-instruct"),
    ("plan-rtx4090-qwen25-7b-bf16", "rtx-4090", "qwen2.5-7b-instruct"),
    ("plan-a10-qwen25-7b-bf16", "a10", "qwen2.5-7b-instruct"),
    ("plan-rtx3060-llama32-1b", "rtx-3060-12gb", "llama-3.2-1b-instruct"),
]


def main() -> None:
    h200 = tuning.GpuSpec(H200_MIB, 9.0, 1, "NVIDIA H200")
    rtx = tuning.GpuSpec.from_card("rtx-3060-12gb")
    runs = []
    for name, gpu in (("deploy-h200", h200), ("deploy-rtx3060", rtx)):
        r = deploy_command(gpu)
        argv = r["exec_start"].split() + ["--load-format", "dummy"]
        if gpu is rtx:  # same bytes on the big card: util x 12042 / H200 MiB
            util = r["plan"]["gpu_memory_utilization"] * rtx.memory_mib / H200_MIB
            argv = [re.sub(r"^--gpu-memory-utilization=.*", f"--gpu-memory-utilization={util:.4f}", a) for a in argv]
        runs.append(dict(name=name, model="llama-3-8b-instruct-gptq", argv=argv, env=r["env"], unit=r["unit"],
                         plan=r["plan"], probe=True, bench=True))
    base = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", "8000",
            "--load-format", "dummy"]
    cal = [  # name, fixture, flags
        ("cal-gptq-in-config-u030", "llama-3-8b-instruct-gptq-qc",
         ["--dtype=float16", "--max-model-len=8192", "--gpu-memory-utilization=0.30", "--max-num-seqs=64",
          "--max-num-batched-tokens=8192"]),
        ("cal-llama31-bf16-u090-32k", "llama-3.1-8b-instruct",
         ["--dtype=auto", "--max-model-len=32768", "--gpu-memory-utilization=0.90", "--max-num-seqs=256",
          "--max-num-batched-tokens=8192"]),
        ("cal-llama31-bf16-24gb-16k", "llama-3.1-8b-instruct",
         ["--dtype=auto", "--max-model-len=16384",
          f"--gpu-memory-utilization={0.90 * 24146 / H200_MIB:.4f}", "--max-num-seqs=16",
          "--max-num-batched-tokens=2048"]),
        ("cal-qwen25-7b-u050-32k", "qwen2.5-7b-instruct",
         ["--dtype=auto", "--max-model-len=32768", "--gpu-memory-utilization=0.50", "--max-num-seqs=128",
          "--max-num-batched-tokens=8192"]),
        ("cal-llama32-1b-u020-128k", "llama-3.2-1b-instruct",
         ["--dtype=auto", "--max-model-len=131072", "--gpu-memory-utilization=0.20", "--max-num-seqs=32",
          "--max-num-batched-tokens=2048"]),
    ]
    for name, model, flags in cal:
        runs.append(dict(name=name, model=model, argv=base + flags, env="", probe=False, bench=False))
    if "--replay-era" in sys.argv:  # issue 28: the deploy's RTX 3060 command of an era, with the default model
        era = sys.argv[sys.argv.index("--replay-era") + 1]
        fixture = sys.argv[sys.argv.index("--replay-era") + 2]
        model = {"llama-3.1-8b-instruct-awq-int4": ("hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
                                                    "db1f81ad4b8c7e39777509fac66c652eb0a52f91")}[fixture]
        r = deploy_command(rtx, fixture, vllm_version=era, model_repo=model[0], model_revision=model[1])
        util = r["plan"]["gpu_memory_utilization"] * rtx.memory_mib / H200_MIB
        argv = [re.sub(r"^--gpu-memory-utilization=.*", f"--gpu-memory-utilization={util:.4f}", a)
                for a in r["exec_start"].split()] + ["--load-format", "dummy"]
        out = [dict(name="deploy-rtx3060", model=fixture, model_dir=r["snapshot"], argv=argv, env=r["env"],
                    unit=r["unit"], plan=r["plan"], served=r["served"], max_model_len=r["plan"]["max_model_len"],
                    budget_mib=r["plan"]["gpu_memory_utilization"] * rtx.memory_mib,
                    warm=True, tools=versions.model_family(json.loads((MODELS / fixture / "config.json").read_text()))
                    .tool_call_parser, chat_template="llama3_1.jinja")]
        d = REPO / "tests/fixtures/gpu-host" / (sys.argv[sys.argv.index("--replay-era") + 3]
                                                 if len(sys.argv) > sys.argv.index("--replay-era") + 3
                                                 else f"vllm-{era}-replay")
        d.mkdir(exist_ok=True)
        (d / "runs.json").write_text(json.dumps(out, indent=1) + "\n")
        print(" ".join(argv))
        print(r["env"])
        return
    if "--replay" in sys.argv:  # issue 17: the deploy's RTX 3060 command, replayed with Open WebUI's requests
        r = deploy_command(rtx)
        util = r["plan"]["gpu_memory_utilization"] * rtx.memory_mib / H200_MIB
        argv = [re.sub(r"^--gpu-memory-utilization=.*", f"--gpu-memory-utilization={util:.4f}", a)
                for a in r["exec_start"].split()] + ["--load-format", "dummy"]
        out = [dict(name="deploy-rtx3060", model="llama-3-8b-instruct-gptq", model_dir=SNAP, argv=argv, env=r["env"],
                    unit=r["unit"], plan=r["plan"], served="astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit",
                    max_model_len=r["plan"]["max_model_len"], warm=True)]
        d = REPO / "tests/fixtures/gpu-host/vllm-0.26.0-replay"
        d.mkdir(exist_ok=True)
        (d / "runs.json").write_text(json.dumps(out, indent=1) + "\n")
        print(" ".join(argv))
        print(r["env"])
        return
    if "--plans" in sys.argv:  # issue 17: the planner's own plans for small cards, each card's bytes on the H200
        out = []
        for name, card, fixture in PLANS:
            gpu = tuning.GpuSpec.from_card(card)
            p = tuning.plan(spec(fixture), gpu, "0.26.0")
            util = p.gpu_memory_utilization * gpu.memory_mib / H200_MIB
            flags = [f"--gpu-memory-utilization={util:.6f}" if f.startswith("--gpu-memory-utilization=") else f
                     for f in p.flags]
            out.append(dict(name=name, card=card, model=fixture, argv=base + flags, env=deploy_command(gpu)["env"],
                            plan=p.to_json(), probe=False, bench=False))
        d = REPO / "tests/fixtures/gpu-host/vllm-0.26.0-plans"
        d.mkdir(exist_ok=True)
        (d / "runs.json").write_text(json.dumps(out, indent=1) + "\n")
        for r in out:
            print(r["name"], r["plan"]["kv_tokens"], " ".join(r["argv"][8:]))
        return
    if "--tp2" in sys.argv:  # the two-GPU host: the deploy's command with vllm_tensor_parallel_size=2
        r = deploy_command(tuning.GpuSpec(H200_MIB, 9.0, 2, "NVIDIA H200"), vllm_tensor_parallel_size=2)
        runs = [dict(name="deploy-h200x2-tp2", model="llama-3-8b-instruct-gptq",
                     argv=r["exec_start"].split() + ["--load-format", "dummy"], env=r["env"], unit=r["unit"],
                     plan=r["plan"], probe=True, bench=True),
                dict(name="cal-llama31-bf16-tp2-u090-32k", model="llama-3.1-8b-instruct",
                     argv=base + ["--dtype=auto", "--max-model-len=32768", "--gpu-memory-utilization=0.90",
                                  "--max-num-seqs=256", "--max-num-batched-tokens=8192", "--tensor-parallel-size=2"],
                     env="", probe=False, bench=False)]
        (REPO / "tests/fixtures/gpu-host/vllm-0.26.0-tp2").mkdir(exist_ok=True)
        (REPO / "tests/fixtures/gpu-host/vllm-0.26.0-tp2/runs.json").write_text(json.dumps(runs, indent=1) + "\n")
        for r in runs:
            print(r["name"], " ".join(r["argv"]))
        return
    # The committed runs.json is what ran on 2026-11-30 (with the planner of that day); --write prepares a new run.
    if "--write" in sys.argv:
        (REPO / "tests/fixtures/gpu-host/vllm-0.26.0/runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    for r in runs:
        print(r["name"], " ".join(r["argv"]))


if __name__ == "__main__":
    main()
