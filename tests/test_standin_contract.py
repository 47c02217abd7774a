"""The stand-in speaks vLLM's contract (issue 17): for every request recorded from Open WebUI 0.12.4 (a real browser
on the test host, tests/fixtures/openwebui/0.12.4/) and the probes of the GPU proof, the stand-in started with the
deploy's own vLLM flags answers what vLLM 0.26.0 answered on the GPU host with the same flags
(tests/fixtures/gpu-host/vllm-0.26.0-replay/replay.json): the same status, the same refusal message for tools
without a parser, a refusal (never an answer) where vLLM refused a prompt beyond max_model_len. A future Open WebUI
pin whose requests vLLM would refuse fails the real tier's browser test on the stand-in, as it would on a GPU box."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import http

REPO = Path(__file__).resolve().parent.parent
REPLAY = REPO / "tests/fixtures/gpu-host/vllm-0.26.0-replay"
OPENWEBUI = REPO / "tests/fixtures/openwebui/0.12.4"
KEY = "contract-test-key"


def gpu_answers() -> dict:
    return json.loads((REPLAY / "replay.json").read_text())["deploy-rtx3060"]


def deploy_flags() -> list[str]:
    """The flags vLLM ran with on the GPU host, from the rendered ExecStart (after --port 8000, less the dummy
    loader that only the proof adds)."""
    argv = json.loads((REPLAY / "runs.json").read_text())[0]["argv"]
    flags = argv[argv.index("--port") + 2:]
    return [f for f in flags if f not in ("--load-format", "dummy")]


def start_standin(*args: str, env: dict | None = None):
    """The stand-in on a free loopback port with these arguments, once /health answers: (process, base URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "testing/standin/openai_standin.py"), "--host", "127.0.0.1",
                             "--port", str(port), *args], env={"PATH": "/usr/bin:/bin", **(env or {})})
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if http(base + "/health")[0] == 200:
                break
        except Exception:
            time.sleep(0.1)
    return proc, base


@pytest.fixture(scope="module")
def standin():
    model = json.loads((REPLAY / "runs.json").read_text())[0]["served"]
    proc, base = start_standin("--model", model, *deploy_flags(), env={"VLLM_API_KEY": KEY})
    yield base, model
    proc.terminate()
    proc.wait()


def test_the_standin_answers_each_recorded_request_as_vllm_did(standin):
    base, model = standin
    fixtures = {name: [json.loads(line) for line in (OPENWEBUI / name).read_text().splitlines()]
                for name in ("requests.jsonl", "native-requests.jsonl")}
    checked = 0
    for row in gpu_answers()["replay"]:
        if row["fixture"] in fixtures:
            body = {**fixtures[row["fixture"]][row["n"]], "model": model, "stream": False}
        elif row["fixture"] == "too-long":
            body = {"model": model, "messages": [{"role": "user", "content": "hello " * row["n"]}]}
        else:  # the sampling chats
            body = {"model": model, "messages": [{"role": "user", "content": "Say hello to the gpu server."}]}
        code, answer = http(base + "/v1/chat/completions", body, token=KEY)
        assert code == row["status"], (row, answer)
        if code != 200:
            assert answer["error"]["type"] == row["error"]["type"] and answer["error"]["code"] == row["error"]["code"]
            if row["fixture"] == "native-requests.jsonl":
                assert answer["error"]["message"] == row["error"]["message"]
            else:
                assert answer["error"]["message"].startswith("This model's maximum context length is 8192 tokens.")
        checked += 1
    assert checked == len(gpu_answers()["replay"]) >= 12


def test_with_a_tool_parser_the_standin_accepts_tools_as_vllm_does(standin):
    """The other side of the contract: --enable-auto-tool-choice --tool-call-parser (a family with tool calling)
    and the same 36-tool request is accepted."""
    proc, base = start_standin("--model", "m", "--max-model-len=131072", "--enable-auto-tool-choice",
                               "--tool-call-parser=llama3_json")
    try:
        native = json.loads((OPENWEBUI / "native-requests.jsonl").read_text().splitlines()[0])
        assert len(native["tools"]) == 36
        code, _ = http(base + "/v1/chat/completions", {**native, "model": "m", "stream": False})
        assert code == 200
    finally:
        proc.terminate()
        proc.wait()


def test_the_standin_counts_no_fewer_tokens_than_llama3s_tokenizer_for_every_recorded_request():
    """The stand-in has no tokenizer; its length refusal holds only if its count is never below the real one. Every
    request Open WebUI 0.12.4 was recorded sending (with and without native tools), counted by Meta's Llama 3
    tokenizer in Llama 3's prompt format (tests/llama3_tokens.py), is at most what the stand-in counts."""
    from testing.standin.openai_standin import prompt_tokens
    from tests.llama3_tokens import prompt_tokens as llama3_prompt, tools_tokens

    reqs = [json.loads(line) for name in ("requests.jsonl", "native-requests.jsonl")
            for line in (OPENWEBUI / name).read_text().splitlines()]
    assert any(r.get("tools") for r in reqs) and len(reqs) >= 10
    for r in reqs:
        real = llama3_prompt(r["messages"]) + (tools_tokens(r["tools"]) if r.get("tools") else 0)
        assert prompt_tokens(r) >= real, (prompt_tokens(r), real, r["messages"][-1]["content"][:80])
