"""Issue 10: version eras, quantization detection, planner input hardening. Expected values written by hand."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from operations.core import versions
from operations.core.settings import Settings
from operations.core.tuning import GpuSpec, ModelSpec, PlanError, plan, quantization_flag

MODELS = Path(__file__).parent / "fixtures" / "models"
GPTQ_CFG = json.loads((MODELS / "llama-3-8b-instruct-gptq" / "config.json").read_text())
GPTQ_Q = json.loads((MODELS / "llama-3-8b-instruct-gptq" / "quantize_config.json").read_text())
GPTQ_IN_CFG = json.loads((MODELS / "llama-3-8b-instruct-gptq-qc" / "config.json").read_text())
REPO = Path(__file__).resolve().parent.parent


def test_uv_cutoffs_come_from_the_era():
    from operations.vllm_service import uv_cutoffs

    assert uv_cutoffs(Settings()) == ["--exclude-newer", "2026-07-27T00:00:00Z"]
    assert uv_cutoffs(Settings(vllm_version="0.33.0")) == ["--exclude-newer", "2026-11-03T00:00:00Z"]
    old = Settings(vllm_version="0.6.3.post1")
    assert uv_cutoffs(old) == ["--exclude-newer", "2024-10-20T00:00:00Z",
                               "--exclude-newer-package", "pyairports=2026-01-01T00:00:00Z"]
    assert Settings().vllm_python_version == "3.12" and old.vllm_python_version == "3.11"


def test_the_venv_is_installed_from_the_eras_lock_of_every_package():
    """vLLM's venv gets exactly its era's lock: the pin, what the era needs besides (0.6.x: setuptools), and every
    dependency at one version (the same set the GPU proof runs), FlashInfer included where vLLM requires it."""
    from operations.vllm_service import vllm_requirements

    old, mid, new = (vllm_requirements(Settings(vllm_version="0.6.3.post1")),
                     vllm_requirements(Settings()), vllm_requirements(Settings(vllm_version="0.33.0")))
    for reqs, must in ((old, {"vllm==0.6.3.post1", "torch==2.4.0", "transformers==4.45.2", "setuptools==75.2.0"}),
                       (mid, {"vllm==0.26.0", "torch==2.11.0", "flashinfer-python==0.6.14", "ninja==1.13.0"}),
                       (new, {"vllm==0.33.0", "torch==2.14.0", "flashinfer-python==0.7.2.post1",
                              "transformers==5.20.2"})):
        assert must <= set(reqs)
        assert all(re.fullmatch(r"[a-z0-9][a-z0-9._-]*(\[[a-z0-9,_-]+\])?==[0-9][^ ;]*", r) for r in reqs), reqs
        assert len({r.split("==")[0] for r in reqs}) == len(reqs)  # one version of each package
    assert len(old) == 114 and len(mid) == 192 and len(new) == 199


def test_cuda_home_only_when_the_toolkit_is_the_eras_runtime():
    from operations.vllm_service import cuda_home

    assert cuda_home(Settings()) == ""  # 0.26.0 bundles CUDA 13.0; the 12.1 toolkit is the user's
    assert cuda_home(Settings(vllm_version="0.6.3.post1")) == "/usr/local/cuda-12.1"


def test_unknown_version_is_refused_naming_the_eras():
    with pytest.raises(Exception, match=r"vllm_version=0.20.0 has no era .*0.6.3.post1, 0.26.0"):
        versions.era("0.20.0")


def test_old_card_message_names_both_versions():
    with pytest.raises(ValueError, match=r"needs compute capability >= 7.5; this GPU has 7.0"):
        versions.check_compute_capability("0.26.0", 7.0)


@pytest.mark.parametrize("cfg,qcfg,cc,expect", [
    (GPTQ_CFG, GPTQ_Q, 8.6, "gptq_marlin"),  # quantize_config.json only: vLLM would load it unquantized
    (GPTQ_CFG, GPTQ_Q, 7.5, "gptq"),  # below sm_80: no Marlin
    (GPTQ_IN_CFG, None, 8.6, None),  # quantization_config in config.json: vLLM picks Marlin itself
    (GPTQ_CFG, {"w_bit": 4, "q_group_size": 128, "quant_method": "awq"}, 8.9, "awq_marlin"),
    (GPTQ_CFG, None, 8.6, None),  # plain fp16
])
def test_quantization_flag_only_where_vllm_cannot_see_the_method(cfg, qcfg, cc, expect):
    assert quantization_flag(ModelSpec.from_config(cfg, qcfg), cc) == expect


def test_both_gptq_shapes_size_the_same_weights():
    a, b = ModelSpec.from_config(GPTQ_CFG, GPTQ_Q), ModelSpec.from_config(GPTQ_IN_CFG)
    assert a.weight_bytes() == b.weight_bytes() and 5.3 < a.weight_bytes() / 2**30 < 5.4


@pytest.mark.parametrize("extra,message", [
    ({"model_type": "mixtral", "num_local_experts": 8}, "mixture of experts (num_local_experts=8)"),
    ({"model_type": "qwen2_moe", "num_experts": 60}, "mixture of experts (num_experts=60)"),
    ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}},
     "quantization 'bitsandbytes' is not modelled"),
    ({"model_type": "phi3"}, "model_type=phi3 is not one the planner models"),
])
def test_unmodelled_architectures_are_refused_by_name(extra, message):
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelSpec.from_config({**GPTQ_CFG, **extra})


def test_gemma2_is_capped_at_4096_on_the_v0_era_only():
    gemma = {**GPTQ_CFG, "model_type": "gemma2", "max_position_embeddings": 8192, "torch_dtype": "bfloat16",
             "num_hidden_layers": 26, "hidden_size": 2304, "intermediate_size": 9216, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000}
    m = ModelSpec.from_config(gemma)
    assert plan(m, GpuSpec.from_card("rtx-4090"), "0.6.3.post1").max_model_len == 4096
    assert plan(m, GpuSpec.from_card("rtx-4090"), "0.26.0").max_model_len == 8192


CLI_BAD = [
    (["--gpu-memory-mib", "0"], "GPU memory 0 MiB: must be > 0"),
    (["--gpu-memory-mib", "-5"], "GPU memory -5 MiB: must be > 0"),
    (["--gpu", "h200", "--gpu-count", "0"], "GPU count 0: must be >= 1"),
    (["--gpu", "h200", "--max-model-len", "0"], "max_model_len=0: must be >= 1"),
    (["--gpu", "h200", "--max-model-len", "-5"], "max_model_len=-5: must be >= 1"),
    (["--gpu", "h200", "--max-num-seqs", "0"], "max_num_seqs=0: must be >= 1"),
    (["--gpu", "h200", "--gpu-memory-utilization", "1.5"], "gpu_memory_utilization=1.5: must be in (0, 1]"),
    (["--gpu", "h200", "--vllm-version", "banana"], "--vllm-version banana has no era"),
    (["--gpu-memory-mib", "x"], "argument --gpu-memory-mib: invalid int value"),
]


@pytest.mark.parametrize("args,message", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_planner_cli_bad_input_is_one_json_error_and_exit_2(args, message):
    cfg = str(MODELS / "llama-3-8b-instruct-gptq" / "config.json")
    p = subprocess.run([sys.executable, "-m", "operations.plan_cli", "--config", cfg, *args, "--json"],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    out = json.loads(p.stdout)
    assert list(out) == ["error"] and message in out["error"]
    plain = subprocess.run([sys.executable, "-m", "operations.plan_cli", "--config", cfg, *args],
                           capture_output=True, text=True, cwd=REPO)
    assert plain.returncode == 2 and plain.stdout == "" and len(plain.stderr.strip().splitlines()) == 1


def test_planner_cli_missing_config_file():
    p = subprocess.run([sys.executable, "-m", "operations.plan_cli", "--config", "/nonexistent/config.json",
                        "--gpu", "h200", "--json"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "cannot read the model config" in json.loads(p.stdout)["error"]


def test_open_webuis_own_prompt_is_what_the_recording_shows():
    """The figures the planner uses for Open WebUI's prompt, recomputed from its requests as recorded by the real
    tier's browser test (tests/fixtures/openwebui/0.12.4): the longest task/RAG prompt (less the chat it quotes),
    the title's max_tokens, the builtin tools of native function calling."""
    import json

    from tests.llama3_tokens import count, prompt_tokens, tools_tokens

    fixtures = REPO / "tests/fixtures/openwebui/0.12.4"
    reqs = [json.loads(line) for line in (fixtures / "requests.jsonl").read_text().splitlines()]
    native = json.loads((fixtures / "native-requests.jsonl").read_text().splitlines()[0])
    chats = [m["content"] for r in reqs for m in r["messages"] if m["role"] == "user" and not m["content"].startswith(
        "### Task:")]
    own = [prompt_tokens(r["messages"][-1:]) - sum(count(c) for c in chats if c in r["messages"][-1]["content"])
           for r in reqs]  # the last message framed as a whole prompt, less the conversation it quotes
    o = versions.OPENWEBUI_PROMPTS["0.12.4"]
    assert max(own) == o["template_tokens"]
    assert max(r.get("max_tokens") or 0 for r in reqs) == o["title_max_tokens"]
    assert len(native["tools"]) == 36 and tools_tokens(native["tools"]) == o["tools_tokens"]


def test_a_context_too_small_for_open_webuis_prompt_is_refused():
    assert versions.conversation_room(8192, "0.12.4", False) == 8192 - 397 - 1000
    with pytest.raises(ValueError, match="leaves -1204 tokens for the conversation"):
        versions.conversation_room(8192, "0.12.4", True)  # 36 tool schemas do not leave room in 8192
    with pytest.raises(ValueError, match="raise vllm_max_model_len"):
        versions.conversation_room(2048, "0.12.4", False)


def test_an_act_order_checkpoint_is_refused_on_an_era_that_ignores_g_idx(monkeypatch):
    """The default checkpoint has desc_act: true; every era llmhost installs honours it. An era recorded with
    act_order=False (vLLM 0.30 removed GPTQ act-order) refuses it with the fix; a checkpoint without it passes."""
    import dataclasses

    versions.check_act_order("0.26.0", True)
    monkeypatch.setitem(versions.ERAS, "0.30.0", dataclasses.replace(versions.ERAS["0.26.0"], vllm="0.30.0",
                                                                     act_order=False))
    with pytest.raises(ValueError, match="desc_act .* vllm_version=0.30.0 ignores g_idx"):
        versions.check_act_order("0.30.0", True)
    versions.check_act_order("0.30.0", False)
    assert json.loads((MODELS / "llama-3-8b-instruct-gptq" / "quantize_config.json").read_text())["desc_act"] is True
