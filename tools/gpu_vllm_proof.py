"""Runs tools/gpu_runs.json on the GPU host (no network, no systemd): each vLLM command, its startup log, the probe.

Stand-ins, named: `--load-format dummy` weights (random, no checkpoint can reach the host); a WordLevel tokenizer
made here with the `tokenizers` library plus a chat template; for GPTQ models a header-only model.safetensors that
lists the real checkpoint's tensor names and dtypes (qweight/qzeros/g_idx int32, scales fp16) and holds no data:
vLLM 0.26.0 reads only that header to decide which layers are quantized (auto_gptq.py maybe_update_config); the
venv's python is the host's python3 with vLLM on PYTHONPATH. Everything else is what the deploy renders.
Results: /tmp/res/<run>.log (raw startup log), /tmp/res/summary.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RES = Path("/tmp/res")
MODELS = REPO / "tests/fixtures/models"
PORT = 8000


def tokenizer(dest: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"] + \
        "the a of to and in is it you that he was for on are with as I his they be at one have this from or had by \
hot word but what some we can out other were all there when up use your how said an each she which do their time \
if will way about many then them write would like so these her long make thing see him two has look more day could \
go come did number sound no most people my over know water than call first who may down side been now find hello \
say world llama vllm gpu card memory token fast slow server model answer question".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}{% endfor %}"
                          "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
    fast.save_pretrained(dest)


def gptq_header(dest: Path, cfg: dict, bits: int, group: int) -> None:
    """Header-only safetensors with the GPTQ checkpoint's tensor names, dtypes and shapes (no data)."""
    h, i, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    lin = {"self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
           "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i), "mlp.down_proj": (i, h)}
    meta, off = {}, 0

    def add(name, dtype, shape, size):
        nonlocal off
        meta[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + size]}
        off += size

    pack = 32 // bits
    for n in range(layers):
        for proj, (d_in, d_out) in lin.items():
            p = f"model.layers.{n}.{proj}"
            add(f"{p}.qweight", "I32", [d_in // pack, d_out], d_in // pack * d_out * 4)
            add(f"{p}.qzeros", "I32", [d_in // group, d_out // pack], d_in // group * d_out // pack * 4)
            add(f"{p}.scales", "F16", [d_in // group, d_out], d_in // group * d_out * 2)
            add(f"{p}.g_idx", "I32", [d_in], d_in * 4)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            add(f"model.layers.{n}.{norm}.weight", "F16", [h], h * 2)
    add("model.embed_tokens.weight", "F16", [cfg["vocab_size"], h], cfg["vocab_size"] * h * 2)
    add("model.norm.weight", "F16", [h], h * 2)
    add("lm_head.weight", "F16", [cfg["vocab_size"], h], cfg["vocab_size"] * h * 2)
    header = json.dumps(meta).encode()
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)


def model_dir(fixture: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    src = MODELS / fixture
    for f in src.glob("*.json"):
        shutil.copy(f, dest / f.name)
    tokenizer(dest)
    cfg = json.loads((src / "config.json").read_text())
    qc = cfg.get("quantization_config") or (json.loads((src / "quantize_config.json").read_text())
                                            if (src / "quantize_config.json").exists() else None)
    if qc:
        gptq_header(dest, cfg, int(qc["bits"]), int(qc["group_size"]))


def http(method, url, body=None, key=None, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def bench(base, key, model, batch, out_tokens=256):
    prompt = " ".join(["the gpu card memory token model answer question"] * 16)  # 128 words
    body = {"model": model, "prompt": prompt, "max_tokens": out_tokens, "temperature": 0, "ignore_eos": True}
    results = []

    def one():
        st, txt = http("POST", base + "/v1/completions", body, key)
        results.append((st, json.loads(txt).get("usage", {}) if st == 200 else txt[:200]))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    toks = sum(u.get("completion_tokens", 0) for st, u in results if st == 200)
    return {"batch": batch, "ok": sum(st == 200 for st, _ in results), "completion_tokens": toks,
            "wall_s": round(wall, 2), "tok_per_s": round(toks / wall, 1)}


def run(r: dict, key: str) -> dict:
    name = r["name"]
    argv = list(r["argv"])
    mi = argv.index("--model") if "--model" in argv else None
    if mi is not None:
        mdir = Path(argv[mi + 1])
    else:
        mdir = Path("/tmp/models") / r["model"]
        argv += ["--model", str(mdir)]
    model_dir(r["model"], mdir)
    env = {k: v for k, v in os.environ.items()}
    for line in r.get("env", "").splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
            if k.endswith(("_ROOT", "_HOME", "_DIR")) and v.startswith("/var/lib"):
                Path(v).mkdir(parents=True, exist_ok=True)
    env["VLLM_API_KEY"] = key  # systemd: EnvironmentFile=/etc/llmhost/vllm.secret.env (root-only)
    served = argv[argv.index("--served-model-name") + 1] if "--served-model-name" in argv else str(mdir)
    log = open(RES / f"{name}.log", "w")
    log.write("# argv: " + " ".join(argv) + "\n")
    log.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out = {"name": name, "argv": argv}
    base = f"http://127.0.0.1:{PORT}"
    healthy = None
    while time.monotonic() - t0 < 480:
        if proc.poll() is not None:
            break
        try:
            if http("GET", base + "/health", timeout=2)[0] == 200:
                healthy = time.monotonic() - t0
                break
        except Exception:
            pass
        time.sleep(1)
    out["healthy_s"] = round(healthy, 1) if healthy else None
    out["exit"] = proc.poll()
    if healthy:
        try:
            out["models_no_key"] = http("GET", base + "/v1/models")[0]
            st, txt = http("GET", base + "/v1/models", key=key)
            out["models_with_key"] = st
            out["model_ids"] = [m["id"] for m in json.loads(txt).get("data", [])] if st == 200 else txt[:200]
            body = {"model": served, "max_tokens": 16, "temperature": 0,
                    "messages": [{"role": "user", "content": "Say hello."}]}
            st, txt = http("POST", base + "/v1/chat/completions", body, key)
            out["chat_status"] = st
            out["chat"] = json.loads(txt) if st == 200 else txt[:300]
            if r.get("bench"):
                bench(base, key, served, 1, 16)  # warm-up
                out["bench"] = [bench(base, key, served, 1), bench(base, key, served, 16)]
            st, txt = http("GET", base + "/metrics")
            out["metrics_kv_usage"] = [l for l in txt.splitlines() if l.startswith("vllm:kv_cache_usage_perc")][:1]
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except Exception:
            pass
        proc.wait()
    log.close()
    time.sleep(3)
    return out


def main() -> None:
    RES.mkdir(exist_ok=True)
    runs = json.loads((REPO / os.environ.get("LLMHOST_RUNS", "tests/fixtures/gpu-host/vllm-0.26.0/runs.json")).read_text())
    only = sys.argv[1:]
    secret = Path("/etc/llmhost/vllm.secret.env")
    secret.parent.mkdir(parents=True, exist_ok=True)
    if not secret.exists():
        import secrets
        old = os.umask(0o077)
        secret.write_text(f"VLLM_API_KEY={secrets.token_urlsafe(32)}\n")
        os.umask(old)
    key = secret.read_text().split("=", 1)[1].strip()
    for r in runs:
        if only and r["name"] not in only:
            continue
        res = run(r, key)
        with open(RES / "summary.jsonl", "a") as f:
            f.write(json.dumps(res) + "\n")
    (RES / "DONE").write_text("done\n")


if __name__ == "__main__":
    main()
