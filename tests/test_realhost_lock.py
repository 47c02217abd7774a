"""Real tier: models by name (the catalogue) and their lock, against a real HF-compatible hub (olah, loopback) with
huggingface_hub's own client: resolve -> lock -> re-run offline (hub stopped) -> the lock holds when the repo moves ->
re-resolve with model_lock=update; and the refusals before anything is locked (act-order on an era that ignores it, a
chat template that ignores tools). The catalogue repos on the hub carry the entries' recorded configs and their
families' original chat templates (trl's copies, testing/hub.py). Each run is a fresh controller process with its own
HF cache; the deploy's own path through preflight runs in tests/test_realhost.py (the switch to a model by name)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testing import hub
from tests.conftest import REPO

pytestmark = pytest.mark.realhost

RUN = """
import json, sys
from operations.context import LlmhostError
from operations.core.settings import Settings
from operations.model_lock import pinned
try:
    s, note = pinned(Settings.from_host_data(json.loads(sys.argv[1])), "box")
    print(json.dumps({"revision": s.model_revision, "repo": s.model_repo, "note": note}))
except LlmhostError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world(tmp_path):
    """A hub of our own (its repos can move), a lock file and a controller HF cache in tmp_path."""
    mirrors, port = tmp_path / "mirrors", free_port()
    procs = []

    def start() -> dict:
        proc, state = hub.serve(port, host="127.0.0.1", mirrors=mirrors)
        procs.append(proc)
        return state

    def stop() -> None:
        proc = procs.pop()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

    def run(**settings) -> dict:
        data = {"hf_endpoint": f"http://127.0.0.1:{port}", "model_lock_file": str(tmp_path / "llmhost.lock"),
                **{k: v for k, v in settings.items() if k != "env"}}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_HOME": str(tmp_path / "hf"),
               **settings.get("env", {})}
        p = subprocess.run([sys.executable, "-c", RUN, json.dumps(data)], cwd=REPO, capture_output=True, text=True,
                           env=env, timeout=300, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr[-3000:]  # a refusal is a line, never a traceback
        return json.loads(p.stdout.strip().splitlines()[-1])

    def move(entry: str, name: str, content: str) -> str:
        """A new commit on the entry's repo at the hub: ``name`` rewritten; returns the new head."""
        from operations.core.catalogue import CATALOGUE

        repo = mirrors / "models" / CATALOGUE[entry].repo
        (repo / name).write_text(content)
        return hub._git_commit(repo, f"update {name}")

    yield type("World", (), dict(start=staticmethod(start), stop=staticmethod(stop), run=staticmethod(run),
                                 move=staticmethod(move), lock=tmp_path / "llmhost.lock"))
    while procs:
        stop()


def test_a_model_by_name_resolves_locks_reruns_offline_and_re_resolves_only_when_asked(world):
    state = world.start()
    head = state["catalogue"]["qwen3-8b-awq"]
    first = world.run(model="qwen3-8b-awq")
    assert first["revision"] == head and first["repo"] == "Qwen/Qwen3-8B-AWQ", first
    assert "locked to Qwen/Qwen3-8B-AWQ@" + head in first["note"]
    locked = world.lock.read_bytes()
    assert json.loads(locked)["models"] == {"qwen3-8b-awq": {"repo": "Qwen/Qwen3-8B-AWQ", "commit": head}}

    world.stop()  # offline: the hub is gone and huggingface_hub is told so; the lock and the cache are enough
    again = world.run(model="qwen3-8b-awq", env={"HF_HUB_OFFLINE": "1"})
    assert again == {"revision": head, "repo": "Qwen/Qwen3-8B-AWQ", "note": None}
    assert world.lock.read_bytes() == locked
    other = world.run(model="qwen2.5-7b-instruct-awq", env={"HF_HUB_OFFLINE": "1"})  # not locked, no hub: refused
    assert "model=qwen2.5-7b-instruct-awq is not in" in other["error"] and "HF_HUB_OFFLINE" in other["error"]

    world.start()
    newer = world.move("qwen3-8b-awq", "README.md", "a new revision upstream\n")
    assert newer != head
    assert world.run(model="qwen3-8b-awq")["revision"] == head  # the lock, not the repo's head
    assert world.lock.read_bytes() == locked
    upgraded = world.run(model="qwen3-8b-awq", model_lock="update")
    assert upgraded["revision"] == newer and f"(was {head[:12]})" in upgraded["note"], upgraded
    assert json.loads(world.lock.read_text())["models"]["qwen3-8b-awq"]["commit"] == newer
    assert world.run(model="qwen3-8b-awq")["revision"] == newer


def test_refusals_come_before_anything_is_locked(world):
    state = world.start()
    # The old default is GPTQ with act-order: refused on an era that ignores g_idx, served (and locked) on 0.26.0.
    refused = world.run(model="llama-3-8b-instruct-gptq", vllm_version="0.33.0")
    assert "act-order" in refused["error"] and "vllm_version=0.33.0 ignores g_idx" in refused["error"], refused
    assert not world.lock.exists()
    ok = world.run(model="llama-3-8b-instruct-gptq", vllm_version="0.26.0")
    assert ok["revision"] == state["catalogue"]["llama-3-8b-instruct-gptq"], ok
    # The same locked model is refused again on the newer era (the lock is checked on every run, not only once).
    assert "act-order" in world.run(model="llama-3-8b-instruct-gptq", vllm_version="0.33.0")["error"]

    # A tool family whose repo moves to a chat template that ignores tools (Llama 3.0's, trl's copy): the update is
    # refused and the lock keeps the commit it had.
    assert world.run(model="qwen2.5-7b-instruct-awq")["revision"] == state["catalogue"]["qwen2.5-7b-instruct-awq"]
    before = world.lock.read_bytes()
    from testing.tiny_model import original_template

    world.move("qwen2.5-7b-instruct-awq", "tokenizer_config.json",
               json.dumps({"chat_template": original_template("llama3").read_text()}))
    bad = world.run(model="qwen2.5-7b-instruct-awq", model_lock="update")
    assert "its chat template ignores the tools it is given" in bad["error"], bad
    assert world.lock.read_bytes() == before

    # A repo that changed its quantization under the same name: refused by the entry's recorded facts.
    from operations.core.catalogue import CATALOGUE

    cfg = dict(CATALOGUE["qwen3-8b-awq"].config, quantization_config={"bits": 8, "group_size": 128,
                                                                       "quant_method": "gptq", "desc_act": False})
    world.move("qwen3-8b-awq", "config.json", json.dumps(cfg))
    moved = world.run(model="qwen3-8b-awq")
    assert "the catalogue expects awq 4-bit, the repo's config says gptq 8-bit" in moved["error"], moved


def test_a_lock_that_is_not_one_is_named_with_the_fix(world):
    world.lock.write_text('{"models": {"qwen3-8b-awq": {"repo": "Qwen/Qwen3-8B-AWQ", "commit": "main"}}}')
    out = world.run(model="qwen3-8b-awq")
    assert f"model_lock_file={world.lock} is not an llmhost lock" in out["error"] and "restore it" in out["error"]
