"""The flag planner against public vLLM startup logs, and its rules."""

import itertools
import json
from pathlib import Path

import pytest

from operations import plan_cli
from operations.core import tuning, versions
from operations.core.tuning import GpuSpec, ModelSpec, PlanError, plan

MODELS = Path(__file__).parent / "fixtures" / "models"


def model(name: str) -> ModelSpec:
    d = MODELS / name
    q = d / "quantize_config.json"
    return ModelSpec.from_config(json.loads((d / "config.json").read_text()),
                                 json.loads(q.read_text()) if q.exists() else None)


# Each case: what a public vLLM log printed at startup, and the inputs that produced it.
# total_mib is the CUDA-visible total the log printed (total_gpu_memory), or the card's known CUDA total.
CALIBRATION = [
    dict(source="vllm-project/vllm#10517 (comment 2024-12-02)", card="RTX 3090", model="llama-3.1-8b-instruct",
         version="0.6.4.post1", total_mib=24146, cc=8.6, util=0.90, max_model_len=20000, seqs=256,
         weights_gib=14.9888, gpu_blocks=1952),
    dict(source="vllm-project/vllm#10517 (comment 2024-12-02)", card="RTX 3090", model="llama-3.1-8b-instruct",
         version="0.6.4.post1", total_mib=24146, cc=8.6, util=0.90, max_model_len=29000, seqs=256,
         weights_gib=14.9888, gpu_blocks=1478),
    dict(source="vllm-project/vllm PR #10511 (Meta-Llama-3-8B, tp=1)", card="H100 80GB",
         model="llama-3-8b-instruct-bf16", version="0.6.5", total_mib=81121, cc=9.0, util=0.90,
         max_model_len=8192, seqs=256, weights_gib=14.96, gpu_blocks=int(53.29 * 1024 / 2)),
    dict(source="REFERENCE.md §2 (published RTX 3060 log, AWQ, --dtype half)", card="RTX 3060 12GB",
         model="llama-3-8b-instruct-awq", version="0.5.3", total_mib=12042, cc=8.6, util=0.95,
         max_model_len=4096, seqs=256, weights_gib=5.3440, gpu_blocks=2302),
    dict(source="REFERENCE.md §2 (Llama-3-8B 4-bit g128 in vLLM)", card="RTX 3060 12GB",
         model="llama-3-8b-instruct-gptq", version="0.6.3.post1", total_mib=12042, cc=8.6, util=0.90,
         max_model_len=8192, seqs=256, weights_gib=5.34, gpu_blocks=None),
]


def _bf16_llama3() -> ModelSpec:
    cfg = json.loads((MODELS / "llama-3-8b-instruct-gptq" / "config.json").read_text())
    cfg["torch_dtype"] = "bfloat16"
    return ModelSpec.from_config(cfg)


@pytest.mark.parametrize("case", CALIBRATION, ids=lambda c: f"{c['card']}-{c['model']}-{c['max_model_len']}")
def test_planner_matches_public_logs(case):
    m = _bf16_llama3() if case["model"] == "llama-3-8b-instruct-bf16" else model(case["model"])
    e = tuning.estimate(m, GpuSpec(case["total_mib"], case["cc"], 1, case["card"]), case["version"],
                        max_model_len=case["max_model_len"], gpu_memory_utilization=case["util"],
                        max_num_seqs=case["seqs"])
    print(case["source"], e)
    assert e["weights_gib"] == pytest.approx(case["weights_gib"], rel=0.05)
    if case["gpu_blocks"] is not None:
        assert e["gpu_blocks"] == pytest.approx(case["gpu_blocks"], rel=0.10)


def test_tensor_parallel_halves_weights_per_gpu():
    # PR #10511: Meta-Llama-3-8B with -tp 2 logged "model weights take 7.48GiB" per GPU.
    m = _bf16_llama3()
    assert m.weight_bytes(tp=2) / tuning.GIB == pytest.approx(7.48, rel=0.05)


def test_kv_bytes_per_token_llama3_8b():
    assert model("llama-3-8b-instruct-gptq").kv_bytes_per_token() == 131072


def test_rtx3060_default_plan_for_the_default_model():
    p = plan(model("llama-3-8b-instruct-gptq"), GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1")
    assert p.max_model_len == 8192  # the model's own limit, never the blog's 16384
    # The fixture carries quantize_config.json only: vLLM would load it unquantized unless told; Marlin on sm_86.
    assert "--quantization=gptq_marlin" in p.flags and "--quantization=gptq" not in p.flags
    assert "--dtype=float16" in p.flags
    assert p.max_concurrency >= 2.0
    assert 4 <= p.max_num_seqs <= 64
    assert not any("fp8" in f for f in p.flags)
    assert 5.2 < p.weights_gib < 5.5


def test_override_above_model_limit_is_refused_with_reason():
    with pytest.raises(PlanError, match=r"max_position_embeddings=8192"):
        plan(model("llama-3-8b-instruct-gptq"), GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1",
             max_model_len=16384)


def test_overrides_are_used_exactly():
    p = plan(model("llama-3-8b-instruct-gptq"), GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1",
             max_model_len=4096, gpu_memory_utilization=0.8, max_num_seqs=8)
    assert (p.max_model_len, p.gpu_memory_utilization, p.max_num_seqs) == (4096, 0.8, 8)
    assert "--max-model-len=4096" in p.flags and "--gpu-memory-utilization=0.80" in p.flags


def test_bf16_8b_does_not_fit_12gb_and_says_what_would():
    with pytest.raises(PlanError) as exc:
        plan(_bf16_llama3(), GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1")
    msg = str(exc.value)
    assert "needs" in msg and "GiB" in msg and "lower-bit" in msg


def test_big_card_gets_long_context_and_many_sequences():
    p = plan(model("llama-3.1-8b-instruct"), GpuSpec(140_000, 9.0, 1, "h200"), "0.6.3.post1")
    assert p.max_model_len == 131072
    assert p.max_num_seqs == 256


def test_long_context_model_on_small_card_picks_largest_context_that_keeps_concurrency():
    p = plan(model("llama-3.1-8b-instruct"), GpuSpec.from_card("rtx-4090"), "0.6.3.post1")
    assert p.max_model_len < 131072
    assert p.kv_tokens >= 2 * p.max_model_len


def test_desktop_reservation_lowers_utilization():
    p = plan(model("llama-3-8b-instruct-gptq"), GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1",
             reserved_mib=1500)
    assert p.gpu_memory_utilization <= 1 - 1500 / 12042


def test_multi_gpu_uses_tensor_parallel_only_when_needed():
    one = plan(model("llama-3-8b-instruct-gptq"), GpuSpec.from_card("rtx-3060-12gb", count=2), "0.6.3.post1")
    assert one.tensor_parallel_size == 1
    two = plan(_bf16_llama3(), GpuSpec.from_card("rtx-3060-12gb", count=2), "0.6.3.post1")
    assert two.tensor_parallel_size == 2 and "--tensor-parallel-size=2" in two.flags


def test_cli_json_has_the_documented_keys(capsys):
    rc = plan_cli.main(["--config", str(MODELS / "llama-3-8b-instruct-gptq" / "config.json"),
                      "--gpu", "rtx-3060-12gb", "--json", "--max-model-len", "4096"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("weights_gib", "kv_cache_gib", "kv_bytes_per_token", "kv_tokens", "gpu_blocks", "max_model_len",
                "max_num_seqs", "gpu_memory_utilization", "max_concurrency", "flags", "warnings"):
        assert key in out
    assert out["max_model_len"] == 4096


def test_cli_refusal_exits_2(capsys):
    rc = plan_cli.main(["--config", str(MODELS / "llama-3-8b-instruct-gptq" / "config.json"),
                      "--gpu-memory-mib", "4096", "--json"])
    assert rc == 2
    assert "does not fit" in json.loads(capsys.readouterr().out)["error"]


def test_cli_reads_the_model_from_a_hub(tmp_path):
    """`--model REPO@REV` through huggingface_hub against a real HF-compatible hub (olah) on loopback."""
    import os
    import subprocess
    import sys

    from testing import hub

    proc, st = hub.serve(18091, host="127.0.0.1", mirrors=tmp_path / "mirrors")  # not the real tier's hub's
    try:
        env = {**os.environ, "HF_ENDPOINT": st["endpoint"], "HF_HOME": str(tmp_path)}
        env.pop("HF_HUB_OFFLINE", None)
        p = subprocess.run([sys.executable, "-m", "operations.plan_cli", "--model", f"{st['repo']}@{st['commit']}",
                            "--gpu", "rtx-3060-12gb", "--json"], cwd=Path(__file__).parent.parent, env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        proc.terminate()
        proc.wait()
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["max_model_len"] == 8192 and out["kv_bytes_per_token"] == 131072


def test_every_flag_the_deploy_passes_exists_in_the_pinned_vllm():
    """The help text of vLLM 0.6.3.post1's api_server, recorded from a real install on the test host."""
    import re

    from operations.core.settings import Settings
    from operations.vllm_service import exec_start

    help_text = (Path(__file__).parent / "fixtures" / "vllm-0.6.3.post1-api-server-help.txt").read_text()
    known = set(re.findall(r"(--[a-z][a-z0-9-]+)", help_text))
    m = model("llama-3-8b-instruct-gptq")
    plans = [plan(m, GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1"),
             plan(m, GpuSpec.from_card("rtx-3060-12gb"), "0.6.3.post1", gpu_memory_utilization=0.99,
                  max_num_seqs=256),
             plan(_bf16_llama3(), GpuSpec.from_card("rtx-3060-12gb", count=2), "0.6.3.post1")]
    assert any("--enforce-eager" in p.flags for p in plans) and any(p.tensor_parallel_size == 2 for p in plans)

    class Ctx:  # what exec_start reads from the deploy context
        s = Settings(gpu_card="rtx-3060-12gb")
        snapshot_path = "/var/lib/llmhost/models/x"

    for p, fam in zip(plans, itertools.cycle(versions.FAMILIES.values())):  # every family's tool flags too
        Ctx.plan, Ctx.family = p, fam
        used = set(re.findall(r"(--[a-z][a-z0-9-]+)", exec_start(Ctx, "/opt/llmhost/vllm/current")))
        assert used and used <= known, used - known


def test_the_plan_cli_plans_the_default_checkpoint_as_the_deploy_does(capsys):
    """Issue 28: Llama 3.1 with tool calling on an RTX 3060: the power-of-two context (8192) cannot hold Open WebUI's
    own prompt with its 36 tool schemas (9,396 tokens + 1,024 for the conversation), so the planner takes the longest
    context in 1024-token steps that still holds two full-length chats: 15360 (the deploy's fake runs print the same)."""
    cfg = str(MODELS / "llama-3.1-8b-instruct-awq-int4" / "config.json")
    assert plan_cli.main(["--config", cfg, "--gpu", "rtx-3060-12gb", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["max_model_len"] == 15360 and 2 * 15360 <= got["kv_tokens"] < 2 * 16384  # the next step does not fit
    assert plan_cli.main(["--config", cfg, "--gpu", "rtx-3060-12gb", "--json", "--openwebui-version", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["max_model_len"] == 8192  # vLLM alone: the power of two


def test_a_longer_needed_context_never_over_promises_and_never_shortens_the_plan():
    """Every card of the table x every model fixture x needed contexts from none to beyond any card: the KV cache
    always holds min_concurrency full-length sequences, the context never gets shorter for a client that needs
    more, and it changes only where the power-of-two context was below what the client needs."""
    from operations.core.versions import CARDS

    for card in CARDS:
        for fixture in sorted(p.name for p in MODELS.iterdir() if (p / "config.json").exists()):
            try:
                base = plan(model(fixture), GpuSpec.from_card(card), "0.26.0")
            except PlanError:
                continue
            for need in (0, 4096, 10420, 20000, 200000):
                p = plan(model(fixture), GpuSpec.from_card(card), "0.26.0", min_context=need)
                assert p.kv_tokens >= p.max_model_len * 2, (card, fixture, need)
                assert p.max_model_len >= base.max_model_len, (card, fixture, need)
                assert p.max_model_len == base.max_model_len or base.max_model_len < need, (card, fixture, need)
