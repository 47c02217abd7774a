"""Fast tier: the model catalogue (models by name), its checks against a repo's files, "what fits my card", and the
settings and command line around them. The lock against a real hub: tests/test_realhost_lock.py; the deploy's switch
to a model by name on the test host: tests/test_realhost.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from operations.core.catalogue import CATALOGUE, CatalogueError, check, fits, quantization, tools_problem
from operations.core.settings import Settings, SettingsError
from operations.core.tuning import GpuSpec, ModelSpec
from operations.core.versions import CARDS, ERAS, FAMILIES, conversation_room, model_family
from tests.conftest import REPO

# Templates in the shapes the real ones take (the real ones, trl's copies, are judged in the real tier): one that
# lays the tools out as Llama 3.1's does, one that ignores them as Llama 3.0's does, one that fails on them.
RENDERS = ("{{ bos_token }}{% if tools %}{% for t in tools %}{{ t | tojson(indent=4) }}{% endfor %}{% endif %}"
           "{% for m in messages %}{{ m['content'] }}{% endfor %}")
IGNORES = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
RAISES = "{% if tools %}{{ raise_exception('tools are not supported') }}{% endif %}"
FIXTURES = {"llama-3.1-8b-instruct-4bit": "llama-3.1-8b-instruct-awq-int4",
            "llama-3-8b-instruct-gptq": "llama-3-8b-instruct-gptq"}


@pytest.mark.parametrize("name", CATALOGUE)
def test_each_entry_is_what_its_recorded_config_says(name):
    e = CATALOGUE[name]
    spec = ModelSpec.from_config(e.config, e.quantize_config)  # the planner models it
    assert model_family(e.config).name == e.family and e.family in FAMILIES
    assert quantization(e.config, e.quantize_config) == (e.quant_method, e.bits, e.act_order)
    assert spec.max_position_embeddings == e.context
    check(e, e.config, e.quantize_config, RENDERS, "0.26.0")  # its own files pass its own check
    if name in FIXTURES:  # recorded once: the catalogue's copy is the planner tests' fixture
        d = REPO / "tests/fixtures/models" / FIXTURES[name]
        assert e.files == {f.name: json.loads(f.read_text()) for f in d.glob("*.json")
                           if f.name in ("config.json", "quantize_config.json")}


def test_a_repo_that_is_not_the_entry_is_refused_with_the_reason():
    e = CATALOGUE["qwen3-8b-awq"]
    eight = dict(e.config, quantization_config=dict(e.config["quantization_config"], bits=8))
    with pytest.raises(CatalogueError, match="expects awq 4-bit, the repo's config says awq 8-bit"):
        check(e, eight, None, RENDERS, "0.33.0")
    act = dict(e.config, quantization_config={"quant_method": "gptq", "bits": 4, "desc_act": True})
    with pytest.raises(CatalogueError, match="expects awq 4-bit"):
        check(e, act, None, RENDERS, "0.33.0")
    with pytest.raises(CatalogueError, match="expects the qwen3 family, the repo's config.json is qwen2.5"):
        check(e, dict(e.config, model_type="qwen2"), None, RENDERS, "0.33.0")
    for template, why in [(IGNORES, "ignores the tools"), (RAISES, "fails with tools .*tools are not supported"),
                          (None, "has no chat template")]:
        with pytest.raises(CatalogueError, match=why):
            check(e, e.config, None, template, "0.33.0")
    old = CATALOGUE["llama-3-8b-instruct-gptq"]  # Llama 3.0: no parser, so its template need not render tools
    check(old, old.config, old.quantize_config, IGNORES, "0.26.0")
    for version, era in ERAS.items():
        if not era.act_order:
            with pytest.raises(CatalogueError, match=f"vllm_version={version} ignores g_idx"):
                check(old, old.config, old.quantize_config, IGNORES, version)
    no_act = {**old.quantize_config, "desc_act": False}
    with pytest.raises(CatalogueError, match="expects act-order True, the repo's config says desc_act False"):
        check(old, old.config, no_act, IGNORES, "0.26.0")


def test_tools_problem_renders_as_transformers_does():
    assert tools_problem(RENDERS) is None
    assert "ignores" in tools_problem(IGNORES)
    assert "tools are not supported" in tools_problem(RAISES)


@pytest.mark.parametrize("card", sorted(CARDS))
@pytest.mark.parametrize("version", [v for v, e in ERAS.items() if e.memory_model == "v1"])
def test_what_fits_is_what_the_deploy_would_accept(card, version):
    """Every verdict on every card and era: a "fits" leaves Open WebUI's own prompt its room (the same check the
    deploy's preflight makes), never beyond the model's context; act-order only where the era honours it."""
    gpu = GpuSpec.from_card(card)
    rows = fits(gpu, version, "0.12.4")
    assert [r.entry.name for r in rows] == list(CATALOGUE)
    for r in rows:
        if r.verdict.startswith("fits"):
            native = r.verdict == "fits, native tools"
            conversation_room(r.max_model_len, "0.12.4", native)  # raises where preflight would refuse
            assert r.max_model_len <= r.entry.context and r.max_concurrency >= 2.0
            assert not (r.entry.act_order and not ERAS[version].act_order)
        else:
            assert r.verdict.startswith("no: ") and r.max_model_len == 0


def test_the_3060_gets_every_tool_model_with_native_tools_and_the_old_default_only_on_its_era():
    gpu = GpuSpec.from_card("rtx-3060-12gb")
    new = {r.entry.name: r.verdict for r in fits(gpu, "0.33.0", "0.12.4")}
    assert new == {"llama-3.1-8b-instruct-4bit": "fits, native tools", "qwen3-8b-awq": "fits, native tools",
                   "qwen2.5-7b-instruct-awq": "fits, native tools",
                   "llama-3-8b-instruct-gptq": "no: act-order, which vLLM 0.33.0 ignores"}
    old = {r.entry.name: r.verdict for r in fits(gpu, "0.26.0", "0.12.4")}
    assert old["llama-3-8b-instruct-gptq"] == "fits, prompt-based tools (no parser)"


def test_model_by_name_in_the_settings():
    s = Settings.from_host_data({"model": "qwen3-8b-awq"})
    assert s.model_repo == "Qwen/Qwen3-8B-AWQ" and s.served_model_name == "Qwen/Qwen3-8B-AWQ"
    for data, says in [({"model": "qwen3"}, "model='qwen3' is not in the catalogue: choose one of"),
                       ({"model": "qwen3-8b-awq", "model_repo": "a/b"}, "model=qwen3-8b-awq and model_repo are both"),
                       ({"model": "qwen3-8b-awq", "model_revision": "a" * 40}, "and model_revision are both set"),
                       ({"model_lock": "refresh"}, "model_lock: Input should be 'use' or 'update'")]:
        with pytest.raises(SettingsError, match=says):
            Settings.from_host_data(data)


def test_llmhost_plan_fits_prints_the_table_and_json():
    run = lambda *a: subprocess.run([sys.executable, "-m", "operations.plan_cli", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    p = run("--fits", "rtx-3060-12gb", "--vllm-version", "0.33.0")
    assert p.returncode == 0, p.stderr
    assert "qwen3-8b-awq" in p.stdout and "no: act-order, which vLLM 0.33.0 ignores" in p.stdout
    rows = json.loads(run("--fits", "rtx-4090", "--json").stdout)
    assert {r["model"] for r in rows} == set(CATALOGUE) and all(r["licence"] for r in rows)
    bad = run("--fits", "gtx-1080")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice" in bad.stderr


def test_the_deploy_names_an_unlocked_model_offline_and_prints_what_fits(fake_plan, tmp_path):
    rc, _, out = fake_plan("fresh-2404", {"model": "qwen3-8b-awq", "model_lock_file": str(tmp_path / "llmhost.lock")})
    assert rc != 0 and "model=qwen3-8b-awq is not in" in out and "HF_HUB_OFFLINE is set" in out, out[-2000:]
    assert "Traceback" not in out and not (tmp_path / "llmhost.lock").exists()
    rc, _, out = fake_plan("fresh-2404", diff=True)
    assert rc == 0, out[-3000:]
    assert "the catalogue on" in out and "qwen3-8b-awq" in out



def test_a_lock_file_of_any_content_is_read_or_named_in_one_line(tmp_path):
    """Whatever the lock file holds (a hand edit, a merge conflict, another tool's JSON): its models, or one
    LlmhostError naming model_lock_file and the fix; never another exception."""
    from hypothesis import given, settings, strategies as st

    from operations.context import LlmhostError
    from operations.model_lock import read, write

    path = tmp_path / "llmhost.lock"
    pins = st.fixed_dictionaries({"repo": st.text(max_size=20), "commit": st.sampled_from(["a" * 40, "main", "", 40])})
    shapes = st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                         max_size=3),
                                    max_leaves=8).map(json.dumps),
                       st.dictionaries(st.text(max_size=10), pins, max_size=3).map(
                           lambda m: json.dumps({"models": m})))

    @settings(max_examples=300, deadline=None)
    @given(shapes)
    def check(text):
        path.write_text(text)
        try:
            models = read(path)
        except LlmhostError as exc:
            assert str(exc).startswith(f"model_lock_file={path} is not an llmhost lock (") and "\n" not in str(exc)
            return
        assert all(set(p) == {"repo", "commit"} and len(p["commit"]) == 40 for p in models.values())
        write(path, models)  # what was read is written back as it was read
        assert read(path) == models

    check()
