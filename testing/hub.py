"""A Hugging Face-compatible hub on this machine for download tests: olah (a real HF mirror server, offline mode)
serving a small model repo that the tests make as a plain git repository.

Pedigree: the server is olah itself (PyPI, pinned), not a reimplementation; the client that reads it is the real
huggingface_hub snapshot_download of the deploy's fetcher, so the protocol on the wire is Hugging Face's
(revision, tree, resolve with X-Repo-Commit / ETag; REFERENCE §6). The repos are made here: the model's config.json
is the default model's (tests/fixtures/models/llama-3-8b-instruct-gptq), the weights are small random files, and
olah's own refusal of an unknown revision (500, not the Hub's 404) is what the tests see.

    python -m testing.hub up     # writes .cache/hub/state.json: endpoint, repo, commit, pid
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE = REPO_ROOT / ".cache" / "hub"
TEST_REPO = "llmhost-test/tiny-llama-instruct"
EMBEDDING_REPO = "llmhost-test/tiny-embedding"  # a sentence-transformers model made here (random weights)
PORT = int(os.environ.get("LLMHOST_HUB_PORT", "18090"))


def tiny_safetensors(n_floats: int = 4096) -> bytes:
    """A valid safetensors file: one fp16 tensor of zeros (8 KiB, clear of olah's 121-149 byte bug)."""
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F16", "shape": [n_floats // 64, 64],
                                                        "data_offsets": [0, n_floats * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * (n_floats * 2)


def make_repo(base: Path) -> tuple[str, str]:
    """Create the test model as a git repo under base/models/ORG/NAME with two commits: the pinned one (8 KiB of
    weights) and a later one with 4 MiB of weights (for the full-disk test). Return both commit shas."""
    import shutil

    org, name = TEST_REPO.split("/")
    repo = base / "models" / org / name
    if (repo / ".git").exists():
        log = subprocess.run(["git", "-C", str(repo), "log", "--format=%H", "--reverse"], capture_output=True,
                             text=True, check=True).stdout.split()
        if len(log) == 2:
            return log[0], log[1]
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    cfg = json.loads((REPO_ROOT / "tests/fixtures/models/llama-3-8b-instruct-gptq/config.json").read_text())
    (repo / "config.json").write_text(json.dumps(cfg, indent=1))
    (repo / "quantize_config.json").write_text(
        (REPO_ROOT / "tests/fixtures/models/llama-3-8b-instruct-gptq/quantize_config.json").read_text())
    (repo / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": [128001, 128009], "do_sample": True, "temperature": 0.6}))
    (repo / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8192, "bos_token": "<|begin_of_text|>",
                                                            "eos_token": "<|eot_id|>"}))
    (repo / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                              "eos_token": "<|eot_id|>"}))
    (repo / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}))
    (repo / "model.safetensors").write_bytes(tiny_safetensors())
    (repo / "README.md").write_text("Test model for llmhost: Llama-3-8B config, tiny zero weights. Not a model.\n")
    git = ["git", "-C", str(repo), "-c", "user.name=llmhost-tests", "-c", "user.email=tests@llmhost.invalid"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    dated = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    subprocess.run(git + ["commit", "-q", "-m", "tiny test model"], check=True, env=dated)
    (repo / "model.safetensors").write_bytes(tiny_safetensors(2 * 1024 * 1024))
    subprocess.run(git + ["commit", "-q", "-am", "bigger weights"], check=True, env=dated)
    return make_repo(base)


def _git_commit(repo: Path, message: str) -> str:
    git = ["git", "-C", str(repo), "-c", "user.name=llmhost-tests", "-c", "user.email=tests@llmhost.invalid"]
    subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    dated = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    subprocess.run(git + ["commit", "-q", "-m", message], check=True, env=dated)
    return subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def make_embedding_repo(base: Path, hidden: int = 32, inter: int = 64, positions: int = 512) -> str:
    """A tiny sentence-transformers model (BERT, one layer, deterministic random weights, a WordPiece vocabulary of
    letters): loadable by sentence-transformers like a real one, useless for meaning. Returns its commit."""
    import random

    repo = base / "models" / EMBEDDING_REPO
    if (repo / ".git").exists():
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    (repo / "1_Pooling").mkdir(parents=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{x}" for x in letters], ".", ",", "?", "!"]
    (repo / "vocab.txt").write_text("\n".join(vocab) + "\n")
    shapes = {"embeddings.word_embeddings.weight": [len(vocab), hidden],
              "embeddings.position_embeddings.weight": [positions, hidden],
              "embeddings.token_type_embeddings.weight": [2, hidden]}
    layer = "encoder.layer.0."
    for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        shapes[f"{layer}{part}.weight"], shapes[f"{layer}{part}.bias"] = [hidden, hidden], [hidden]
    shapes.update({f"{layer}intermediate.dense.weight": [inter, hidden], f"{layer}intermediate.dense.bias": [inter],
                   f"{layer}output.dense.weight": [hidden, inter], f"{layer}output.dense.bias": [hidden],
                   "pooler.dense.weight": [hidden, hidden], "pooler.dense.bias": [hidden]})
    for norm in ("embeddings.LayerNorm", f"{layer}attention.output.LayerNorm", f"{layer}output.LayerNorm"):
        shapes[f"{norm}.weight"], shapes[f"{norm}.bias"] = [hidden], [hidden]
    rnd, header, blobs, offset = random.Random(0), {}, [], 0
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        ones = name.endswith("LayerNorm.weight")
        blobs.append(struct.pack(f"<{n}f", *([1.0] * n if ones else [rnd.uniform(-0.1, 0.1) for _ in range(n)])))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}
        offset += 4 * n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (repo / "model.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    (repo / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": hidden, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": inter, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "max_position_embeddings": positions, "type_vocab_size": 2,
        "vocab_size": len(vocab), "layer_norm_eps": 1e-12, "pad_token_id": 0, "torch_dtype": "float32"}, indent=1))
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]"}
    (repo / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": positions,
                                                            "tokenizer_class": "BertTokenizer", **special}))
    (repo / "special_tokens_map.json").write_text(json.dumps(special))
    (repo / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (repo / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (repo / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (repo / "README.md").write_text("Test embedding model for llmhost: random weights. Not a model.\n")
    return _git_commit(repo, "tiny embedding model")


def add_repo(name: str, source: Path) -> str:
    """Serve the files of directory ``source`` as repo ``name`` (one commit; olah reads its mirrors at each request,
    so a running hub serves it at once). Returns the commit."""
    import shutil

    repo = STATE / "mirrors" / "models" / name
    shutil.rmtree(repo, ignore_errors=True)
    shutil.copytree(source, repo)
    return _git_commit(repo, f"{name} (llmhost tests)")


# The catalogue's families -> trl's copy of their checkpoints' original chat templates (testing/tiny_model.py).
TEMPLATES = {"llama-3.1": "llama3_1", "llama-3.0": "llama3", "qwen2.5": "qwen2_5", "qwen3": "qwen3"}


def make_catalogue_repos(base: Path) -> dict[str, str]:
    """Every catalogue entry's repo under its real name (operations/core/catalogue.py): its recorded config.json (+
    quantize_config.json), a tokenizer_config.json carrying the family's ORIGINAL chat template (trl's copy) and
    8 KiB of zero weights. Returns name -> commit."""
    from operations.core.catalogue import CATALOGUE
    from testing.tiny_model import original_template

    out = {}
    for e in CATALOGUE.values():
        repo = base / "models" / e.repo
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            for name, content in e.files.items():
                (repo / name).write_text(json.dumps(content, indent=1))
            (repo / "tokenizer_config.json").write_text(json.dumps(
                {"chat_template": original_template(TEMPLATES[e.family]).read_text()}, indent=1))
            (repo / "model.safetensors").write_bytes(tiny_safetensors())
            (repo / "README.md").write_text(f"Stand-in for {e.repo} (llmhost tests): its recorded config, its family's "
                                            "original chat template, zero weights. Not a model.\n")
            _git_commit(repo, "catalogue stand-in")
        out[e.name] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                     check=True).stdout.strip()
    return out


def serve(port: int, host: str = "0.0.0.0", mirrors: Path | None = None) -> tuple[subprocess.Popen, dict]:
    """Start olah on port with the test repos (in ``mirrors``, default .cache/hub/mirrors); return the process and
    what it serves."""
    STATE.mkdir(parents=True, exist_ok=True)
    mirrors = mirrors or STATE / "mirrors"
    sha, sha_big = make_repo(mirrors)
    embedding = make_embedding_repo(mirrors)
    catalogue = make_catalogue_repos(mirrors)
    conf = STATE / f"olah-{port}.toml"
    repos = STATE / "repos" if mirrors == STATE / "mirrors" else mirrors.parent / "olah-repos"  # olah's own cache
    conf.write_text(f'[basic]\nhost = "{host}"\nport = {port}\nrepos-path = "{repos}"\n'
                    f'mirrors-path = ["{mirrors}"]\nmirror-scheme = "http"\n\n[accessibility]\noffline = true\n')
    olah = Path(sys.executable).with_name("olah-cli")
    log = open(STATE / f"olah-{port}.log", "wb")
    proc = subprocess.Popen([str(olah), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=STATE)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"olah did not start (see {log.name})")
            time.sleep(0.3)
    return proc, {"pid": proc.pid, "port": port, "repo": TEST_REPO, "commit": sha, "commit_big": sha_big,
                  "embedding_repo": EMBEDDING_REPO, "embedding_commit": embedding, "catalogue": catalogue,
                  "endpoint": f"http://127.0.0.1:{port}"}


def up(port: int = PORT) -> dict:
    """The hub the test host uses (state in .cache/hub/state.json, stopped by down())."""
    down()
    _, state = serve(port)
    (STATE / "state.json").write_text(json.dumps(state))
    return state


def down() -> None:
    f = STATE / "state.json"
    if f.exists():
        pid = json.loads(f.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        from testing.testhost import wait_gone

        wait_gone(pid, 10)  # its port must be free for the next up
        f.unlink()


if __name__ == "__main__":
    print(json.dumps(up()) if sys.argv[1:2] == ["up"] else (down() or "down"))
