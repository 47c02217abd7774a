"""Issue 10: the vLLM 0.26.0 runs recorded on the real H200 (tools/gpu_vllm_proof.py), replayed.

Each raw startup log holds vLLM's own breakdown ("Actual usage is W GiB for weight, A GiB for peak activation,
N GiB for non-torch memory, and G GiB for CUDAGraph memory"), "Available KV cache memory" and "GPU KV cache size".
The V1 memory model must predict every term for the same flags, and the KV cache within 5 %.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

from operations.core import tuning, versions

REC = Path(__file__).parent / "fixtures" / "gpu-host" / "vllm-0.26.0"
REC_TP2 = Path(__file__).parent / "fixtures" / "gpu-host" / "vllm-0.26.0-tp2"  # the two-GPU H200 host
MODELS = Path(__file__).parent / "fixtures" / "models"
H200 = tuning.GpuSpec(versions.cuda_visible_mib("NVIDIA H200", 143771), 9.0, 1, "NVIDIA H200")
PLANS = Path(__file__).parent / "fixtures" / "gpu-host" / "vllm-0.26.0-plans"  # the planner's own plans, 2026-12-04
LOGS = sorted(REC.glob("*.log")) + sorted(REC_TP2.glob("*.log")) + sorted(PLANS.glob("*.log"))


def parse(log: Path) -> dict:
    text = log.read_text()
    argv = shlex.split(text.splitlines()[0].removeprefix("# argv: "))
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    m = re.search(r"Actual usage is ([\d.]+) GiB for weight, ([\d.]+) GiB for peak activation, ([\d.]+) GiB for "
                  r"non-torch memory, and ([\d.]+) GiB for CUDAGraph memory", text)
    kv = float(re.search(r"Available KV cache memory: ([\d.]+) GiB", text).group(1))
    tokens = int(re.search(r"GPU KV cache size: ([\d,]+) tokens", text).group(1).replace(",", ""))
    return dict(argv=argv, flags=flags, weights=float(m.group(1)), act=float(m.group(2)),
                non_torch=float(m.group(3)), graphs=float(m.group(4)), kv=kv, kv_tokens=tokens)


def fixture_for(log: Path) -> str:
    runs = {r["name"]: r for r in json.loads((log.parent / "runs.json").read_text())}
    return runs[log.stem]["model"]


def spec(name: str) -> tuning.ModelSpec:
    d = MODELS / name
    q = d / "quantize_config.json"
    return tuning.ModelSpec.from_config(json.loads((d / "config.json").read_text()),
                                        json.loads(q.read_text()) if q.exists() else None)


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_v1_planner_matches_each_term_of_the_logged_breakdown(log):
    got = parse(log)
    f = got["flags"]
    tp = int(f.get("tensor-parallel-size", 1))  # per-GPU figures: vLLM logs each worker's own
    est = tuning.estimate(spec(fixture_for(log)), tuning.GpuSpec(H200.memory_mib, 9.0, tp, "NVIDIA H200"), "0.26.0",
                          max_model_len=int(f["max-model-len"]), gpu_memory_utilization=float(f["gpu-memory-utilization"]),
                          max_num_seqs=int(f["max-num-seqs"]), max_num_batched_tokens=int(f["max-num-batched-tokens"]),
                          tp=tp)
    assert est["weights_gib"] == pytest.approx(got["weights"], rel=0.02, abs=0.01)
    assert est["activation_gib"] == pytest.approx(got["act"], rel=0.05, abs=0.01)
    assert est["non_torch_gib"] == pytest.approx(got["non_torch"], abs=0.01)
    assert est["cuda_graph_gib"] == pytest.approx(got["graphs"], abs=0.06)
    assert est["kv_cache_gib"] == pytest.approx(got["kv"], rel=0.05)
    assert est["kv_tokens"] == pytest.approx(got["kv_tokens"], rel=0.05)


@pytest.mark.parametrize("run", json.loads((PLANS / "runs.json").read_text()), ids=lambda r: r["name"])
def test_the_planners_own_plans_never_over_promise_on_the_gpu_host(run):
    """Issue 17: seven plans of today's planner (12, 8, 16 and 24 GB cards; Llama 3 GPTQ, Llama 3.1 and Qwen2.5 at
    16 bits, Llama 3.2 1B) ran on the H200 with exactly the plan's flags, each card's budget as the same bytes
    (tools/gpu_proof_commands.py --plans, tools/gpu_device.sh calib). The KV tokens the plan promises are within 1 %
    of what vLLM gave and never more than 0.5 % above it. These runs were not used to fit the memory model (its
    terms come from the 2026-11-30 runs and tools/gpu_weights_probe.py), so they test it."""
    gpu = tuning.GpuSpec.from_card(run["card"])
    p = tuning.plan(spec(run["model"]), gpu, "0.26.0")
    ran = parse(PLANS / f"{run['name']}.log")
    not_util = lambda flags: [f for f in flags if not f.startswith("--gpu-memory-utilization=")]  # noqa: E731
    assert not_util([a for a in ran["argv"] if a.startswith("--") and "=" in a]) == not_util(p.flags)
    assert float(ran["flags"]["gpu-memory-utilization"]) * H200.memory_mib == pytest.approx(
        p.gpu_memory_utilization * gpu.memory_mib, abs=0.1)  # the card's budget in MiB, on the big card
    promised, given = p.kv_tokens, ran["kv_tokens"]
    assert given * 0.99 <= promised <= given * 1.005, (promised, given)


def test_the_commands_that_ran_are_what_the_deploy_renders_today():
    """The recorded deploy-* argv is the deploy's ExecStart plus --load-format dummy (and, for the RTX 3060, the
    utilization scaled to the same bytes on the H200). A planner or unit change makes this fail: re-run the proof."""
    import tools.gpu_proof_commands as g

    for name, gpu in (("deploy-h200", H200), ("deploy-rtx3060", tuning.GpuSpec.from_card("rtx-3060-12gb"))):
        rendered = g.deploy_command(gpu)["exec_start"].split()
        ran = parse(REC / f"{name}.log")["argv"]
        expect = rendered + ["--load-format", "dummy"]
        if name.endswith("3060"):
            expect = [a.replace("--gpu-memory-utilization=0.90", "--gpu-memory-utilization=0.0757") for a in expect]
        assert ran == expect


def test_every_flag_the_deploy_passes_exists_in_the_recorded_help_of_its_era():
    for ver, era in versions.ERAS.items():
        help_text = (Path(__file__).parent / "fixtures" / era.help_fixture).read_text()
        p = tuning.plan(spec("llama-3-8b-instruct-gptq"), tuning.GpuSpec.from_card("rtx-3060-12gb"), ver)
        fixed = [*([] if era.serve_cli else ["--model"]), "--served-model-name", "--host", "--port", *era.serve_args]
        for flag in fixed + [f.split("=")[0] for f in p.flags]:
            assert re.search(rf"(^|\s|\[){re.escape(flag)}[\s,\]]", help_text), (ver, flag)
    assert "--disable-log-requests" not in (Path(__file__).parent / "fixtures" /
                                            versions.ERAS["0.26.0"].help_fixture).read_text()


def test_the_tp2_command_that_ran_is_what_the_deploy_renders_with_two_gpus():
    import tools.gpu_proof_commands as g

    rendered = g.deploy_command(tuning.GpuSpec(H200.memory_mib, 9.0, 2, "NVIDIA H200"),
                                vllm_tensor_parallel_size=2)["exec_start"].split()
    assert "--tensor-parallel-size=2" in rendered
    assert parse(REC_TP2 / "deploy-h200x2-tp2.log")["argv"] == rendered + ["--load-format", "dummy"]


def test_the_replayed_command_and_environment_are_what_the_deploy_renders_today():
    """Issue 17's GPU proof ran the deploy's RTX 3060 ExecStart and vllm.env (tests/fixtures/gpu-host/
    vllm-0.26.0-replay): a change to the planner, the unit, the env template or the lock makes this fail — run the
    proof again (tools/gpu_proof_commands.py --replay, tools/gpu_device.sh lockstage/replay)."""
    import tools.gpu_proof_commands as g

    run = json.loads((Path(__file__).parent / "fixtures/gpu-host/vllm-0.26.0-replay/runs.json").read_text())[0]
    now = g.deploy_command(tuning.GpuSpec.from_card("rtx-3060-12gb"))
    expect = [a.replace("--gpu-memory-utilization=0.90", "--gpu-memory-utilization=0.0757")
              for a in now["exec_start"].split()] + ["--load-format", "dummy"]
    assert run["argv"] == expect and run["env"] == now["env"]
    log = (Path(__file__).parent / "fixtures/gpu-host/vllm-0.26.0-replay/deploy-rtx3060-cold.log").read_text()
    assert log.splitlines()[0] == "# argv: " + " ".join(expect)
    frozen = (Path(__file__).parent / "fixtures/gpu-host/vllm-0.26.0-replay/pip-freeze.txt").read_text()
    lock = versions.ERAS["0.26.0"].locked_requirements()
    norm = lambda line: line.lower().replace("_", "-")  # noqa: E731  (pip list prints the distribution's own spelling)
    have = {norm(line).split("==")[0]: norm(line) for line in frozen.splitlines()}
    assert [r for r in lock if have.get(r.split("==")[0]) != r] == ["cuda-pathfinder==1.6.0"]  # the host torch's 1.8.1
