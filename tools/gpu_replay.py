"""The GPU proof of issue 17, run on the GPU host (no network, no systemd as PID 1): what a user's box runs.

- vLLM's venv from the era's lock: a plain venv (no system site-packages) with every wheel of
  operations/core/locks/vllm-0.26.0.txt installed --no-index --no-deps from the carried pieces, FlashInfer included;
  only torch and the CUDA wheels torch itself depends on are the host's own (same versions as the lock, linked in
  by a .pth). `pip list` of that venv is recorded and compared with the lock.
- The rendered unit's environment and nothing else: `runuser -u llmhost-vllm -- env -i` with what systemd gives a
  service with that User= (PATH, HOME from its passwd entry, USER, LOGNAME, SHELL), the rendered vllm.env and the
  root-only key file; /usr/local/cuda is moved aside for the run (a user's box has no CUDA 13 toolkit there), so
  no nvcc is reachable.
- The rendered ExecStart (tests/fixtures/gpu-host/vllm-0.26.0-replay/runs.json, written by
  tools/gpu_proof_commands.py --replay), with two stand-ins, named: `--load-format dummy` (random weights: no
  weights reach the GPU host) and, for the RTX 3060 plan, --gpu-memory-utilization scaled to the same bytes on the
  H200. The model directory holds the repo's small files (config.json, generation_config.json,
  tokenizer_config.json with its chat template and special tokens) and a stand-in tokenizer.json (a word-level
  vocabulary plus those special tokens at their ids).
- Every request Open WebUI 0.12.4 sent (tests/fixtures/openwebui/0.12.4/*.jsonl, recorded at the stand-in while
  a real browser chatted) is replayed; sampling chats (no parameters; 0.8 / 0.95 / 40); a prompt beyond
  max_model_len. Then a restart with the caches kept (a new /tmp, as PrivateTmp gives) measures a warm start.
Results: /tmp/res/*.log, /tmp/res/replay.json, /tmp/res/pip-freeze.txt.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_vllm_proof import http  # noqa: E402  (one HTTP helper for both GPU proofs)

REPO = Path(__file__).resolve().parent.parent
RES = Path("/tmp/res")
ERA = os.environ.get("LLMHOST_ERA", "0.26.0")  # issue 28: the new era's proof runs the same program
VENV = Path(f"/opt/llmhost/vllm/venvs/lock-{ERA}")
LOCK = REPO / f"operations/core/locks/vllm-{ERA}.txt"
USER = "llmhost-vllm"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# torch's own wheels: the host's (same versions as the lock); everything else comes from the lock's pieces
HOST_OWN = ("torch", "torchgen", "functorch", "triton", "nvidia", "cuda", "cuda_bindings", "cuda_pathfinder",
            "cuda_toolkit")


def sh(cmd: str, check: bool = True) -> str:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and p.returncode:
        raise SystemExit(f"{cmd}: {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def build_venv() -> None:
    if (VENV / ".llmhost-complete").exists():
        return
    sh(f"python3 -m venv {VENV}")
    sh(f"{VENV}/bin/pip install -q --no-index --no-deps --no-compile /tmp/stage/*.whl")
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    # wheels carried unpacked (torch, triton, vLLM stripped of what sm_90 / sm_86 never load): zstd tars of the tree
    for tzst in sorted(glob.glob("/tmp/stage/*.tzst")):
        sh(f"{VENV}/bin/python -c 'import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(sys.stdin.buffer, "
           f"sys.stdout.buffer)' < {tzst} | tar xf - -C {VENV}/lib/{pyver}/site-packages")
    for dist in glob.glob(f"{VENV}/lib/{pyver}/site-packages/*.dist-info/entry_points.txt"):  # what pip writes
        import configparser

        eps = configparser.ConfigParser()
        eps.read(dist)
        for name, target in (eps["console_scripts"].items() if eps.has_section("console_scripts") else []):
            script = VENV / "bin" / name
            if not script.exists():
                mod, func = target.split(":")
                script.write_text(f"#!{VENV}/bin/python\nimport sys\nfrom {mod} import {func}\n"
                                  f"sys.exit({func}())\n")
                script.chmod(0o755)
    import torch  # the host's torch: link it and the CUDA wheels it depends on into the venv

    site = Path(torch.__file__).parent.parent
    own = VENV / "host-torch"
    own.mkdir(exist_ok=True)
    staged = {w.split("-")[0].split(".")[0].lower() for w in os.listdir("/tmp/stage")}  # what the pieces brought
    host_own = HOST_OWN if "torch" not in staged else tuple(
        n for n in HOST_OWN if n not in ("torch", "torchgen", "functorch", "triton"))  # the era's own torch
    for entry in site.iterdir():
        base = entry.name.split("-")[0].lower()
        if base in host_own or (entry.name.endswith(".dist-info") and base.startswith("nvidia_")
                                and base not in staged):
            (own / entry.name).symlink_to(entry)
    (VENV / "lib" / pyver / "site-packages" / "llmhost-host-torch.pth").write_text(str(own) + "\n")
    (VENV / ".llmhost-complete").touch()
    Path("/opt/llmhost/vllm/current").unlink(missing_ok=True)
    Path("/opt/llmhost/vllm/current").symlink_to(VENV)


def freeze() -> None:
    out = sh(f"{VENV}/bin/python -m pip list --format=freeze", check=False)
    (RES / "pip-freeze.txt").write_text(out)
    have = {l.split("==")[0].lower().replace("_", "-"): l.split("==")[1] for l in out.splitlines() if "==" in l}
    want = {l.split("==")[0].lower(): l.split("==")[1] for l in LOCK.read_text().splitlines()
            if "==" in l and not l.startswith("#")}
    diff = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v}
    (RES / "lock-vs-venv.json").write_text(json.dumps(diff, indent=1))


def tokenizer_json(dest: Path, tokenizer_config: dict, byte_level: bool = False) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    special = {int(i): t["content"] for i, t in tokenizer_config["added_tokens_decoder"].items()}
    if byte_level:  # every string encodable (guided decoding of tool-call JSON needs "{", quotes, digits...)
        vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
        vocab.update({c: i for i, c in special.items()})
        tok = Tokenizer(models.BPE(vocab, [], ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in special.values()])
        tok.save(str(dest / "tokenizer.json"))
        return

    words = ["<unk>"] + ("the a of to and in is it you that he was for on are with as I his they be at one have this "
                         "from or had by hot word but what some we can out other were all there when up use your how "
                         "said an each she which do their time if will way about many then them write would like so "
                         "these her long make thing see him two has look more day could go come did number sound no "
                         "most people my over know water than call first who may down side been now find hello say "
                         "world llama vllm gpu card memory token fast slow server model answer question").split()
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({c: i for i, c in special.items()})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in special.values()])
    tok.save(str(dest / "tokenizer.json"))


def model_dir(run: dict) -> None:
    # the header-only safetensors with the checkpoint's tensor names
    from gpu_vllm_proof import gptq_header

    d = Path(run["model_dir"])
    d.mkdir(parents=True, exist_ok=True)
    src = REPO / "tests/fixtures/models" / run["model"]
    for f in src.glob("*.json"):
        shutil.copy(f, d / f.name)
    tokenizer_json(d, json.loads((src / "tokenizer_config.json").read_text()), byte_level=bool(run.get("tools")))
    if run.get("chat_template"):  # the checkpoint's ORIGINAL template, from the trl wheel at proof time
        tc = json.loads((d / "tokenizer_config.json").read_text())
        tc["chat_template"] = Path("/tmp/stage", run["chat_template"]).read_text()
        (d / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    cfg = json.loads((src / "config.json").read_text())
    qc = cfg.get("quantization_config") or json.loads((src / "quantize_config.json").read_text())
    gptq_header(d, cfg, int(qc["bits"]), int(qc["group_size"]))
    sh(f"chown -R root:{USER} /var/lib/llmhost/models && chmod -R g+rX /var/lib/llmhost/models")


def unit_env(run: dict) -> list[str]:
    u = pwd.getpwnam(USER)
    env = [f"PATH={SYSTEMD_PATH}", f"HOME={u.pw_dir}", f"USER={USER}", f"LOGNAME={USER}", f"SHELL={u.pw_shell}"]
    for text in (run["env"], Path("/etc/llmhost/vllm.secret.env").read_text()):
        env += [l for l in text.splitlines() if l.strip() and not l.startswith("#") and "=" in l]
    return env


def summarize(status: int, text: str, streamed: bool) -> dict:
    out = {"status": status}
    if status != 200:
        try:
            out["error"] = json.loads(text).get("error")
        except ValueError:
            out["error"] = text[:300]
        return out
    if not streamed:
        body = json.loads(text)
        out.update(finish=body["choices"][0].get("finish_reason"), usage=body.get("usage"),
                   text=(body["choices"][0]["message"].get("content") or "")[:80])
        return out
    chunks = [json.loads(l[6:]) for l in text.splitlines() if l.startswith("data: ") and l != "data: [DONE]"]
    out["done"] = "data: [DONE]" in text
    out["finish"] = next((c["choices"][0].get("finish_reason") for c in reversed(chunks)
                          if c.get("choices") and c["choices"][0].get("finish_reason")), None)
    out["usage"] = next((c["usage"] for c in reversed(chunks) if c.get("usage")), None)
    out["text"] = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks
                          if c.get("choices"))[:80]
    return out


def start(run: dict, name: str):
    argv = run["argv"]
    log = open(RES / f"{name}.log", "w")
    log.write("# argv: " + " ".join(argv) + "\n")
    log.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *unit_env(run), *argv], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd="/var/lib/llmhost/vllm")
    base = "http://127.0.0.1:8000"
    while time.monotonic() - t0 < 560 and proc.poll() is None:
        try:
            if http("GET", base + "/health", timeout=2)[0] == 200:
                return proc, round(time.monotonic() - t0, 1)
        except Exception:
            pass
        time.sleep(1)
    return proc, None


def stop(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sh(f"find /tmp -mindepth 1 -maxdepth 1 -user {USER} -exec rm -rf {{}} +", check=False)  # PrivateTmp: a new /tmp
    time.sleep(3)


def replay(run: dict, key: str) -> list[dict]:
    base, model = "http://127.0.0.1:8000", run["served"]
    results = []
    for fixture in sorted(glob.glob(str(REPO / "tests/fixtures/openwebui/0.12.4/*.jsonl"))):
        for i, line in enumerate(Path(fixture).read_text().splitlines()):
            req = {**json.loads(line), "model": model}
            if os.environ.get("LLMHOST_MAX_TOKENS"):  # dummy weights rarely stop: cap what each answer may take
                req["max_tokens"] = int(os.environ["LLMHOST_MAX_TOKENS"])
            st, txt = http("POST", base + "/v1/chat/completions", req, key)
            results.append({"fixture": Path(fixture).name, "n": i, "tools": len(req.get("tools") or []),
                            "stream": bool(req.get("stream")), **summarize(st, txt, bool(req.get("stream")) and st == 200)})
    hello = [{"role": "user", "content": "Say hello to the gpu server."}]
    for label, extra in (("no sampling parameters (generation_config)", {}),
                         ("temperature 0.8 top_p 0.95 top_k 40", {"temperature": 0.8, "top_p": 0.95, "top_k": 40})):
        st, txt = http("POST", base + "/v1/chat/completions", {"model": model, "messages": hello, "stream": True,
                                                               "max_tokens": 64, **extra}, key)
        results.append({"fixture": "sampling", "n": label, **summarize(st, txt, st == 200)})
    long = [{"role": "user", "content": "hello " * (run["max_model_len"] + 10)}]
    st, txt = http("POST", base + "/v1/chat/completions", {"model": model, "messages": long}, key)
    results.append({"fixture": "too-long", "n": run["max_model_len"] + 10, **summarize(st, txt, False)})
    return results


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}


def tool_round_trip(run: dict, key: str) -> dict:
    """A request with tools and tool_choice naming the function (dummy weights cannot choose on their own; forced
    choice still runs the template, guided decoding and the response shape), then the tool's result sent back."""
    base, model = "http://127.0.0.1:8000", run["served"]
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    st, txt = http("POST", base + "/v1/chat/completions", {
        "model": model, "messages": msgs, "tools": [WEATHER], "max_tokens": 200,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, key)
    out = {"forced": {"status": st, "body": txt[:1500]}}
    if st != 200:
        return out
    msg = json.loads(txt)["choices"][0]["message"]
    calls = msg.get("tool_calls") or []
    out["forced"].update(calls=[c["function"]["name"] for c in calls])
    if not calls:
        return out
    try:
        out["forced"]["arguments_json"] = isinstance(json.loads(calls[0]["function"]["arguments"]), dict)
    except ValueError:
        out["forced"]["arguments_json"] = False
    back = msgs + [{"role": "assistant", "content": None, "tool_calls": calls},
                   {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temperature_c": 14, "sky": "rain"}'}]
    st, txt = http("POST", base + "/v1/chat/completions", {"model": model, "messages": back, "tools": [WEATHER],
                                                           "max_tokens": 32}, key)
    out["result_sent_back"] = {"status": st, **summarize(st, txt, False)}
    st, txt = http("POST", base + "/v1/chat/completions", {"model": model, "messages": msgs, "tools": [WEATHER],
                                                           "tool_choice": "auto", "max_tokens": 32}, key)
    out["auto"] = {"status": st, **summarize(st, txt, False)}
    return out


def main() -> None:
    RES.mkdir(exist_ok=True)
    runs = json.loads((REPO / "tests/fixtures/gpu-host" / os.environ.get("LLMHOST_REPLAY_DIR", f"vllm-{ERA}-replay")
                       / "runs.json").read_text())
    sh(f"id {USER} || useradd --system --home-dir /var/lib/llmhost/vllm --shell /usr/sbin/nologin {USER}")
    sh(f"mkdir -p /var/lib/llmhost/vllm /etc/llmhost && chown {USER}:{USER} /var/lib/llmhost/vllm && "
       "chmod 750 /var/lib/llmhost/vllm")
    secret = Path("/etc/llmhost/vllm.secret.env")
    if not secret.exists():
        import secrets
        old = os.umask(0o077)
        secret.write_text(f"VLLM_API_KEY={secrets.token_urlsafe(32)}\n")
        os.umask(old)
    key = secret.read_text().split("=", 1)[1].strip()
    build_venv()
    freeze()
    sh(f"{VENV}/bin/vllm serve --help=all > {RES}/vllm-{ERA}-serve-help.txt 2>&1", check=False)
    hidden = Path("/usr/local/cuda").exists()
    if hidden:
        os.rename("/usr/local/cuda", "/usr/local/cuda.llmhost-hidden")
    try:
        summary = {}
        for run in runs:
            model_dir(run)
            if run.get("budget_mib"):  # the card's budget in bytes on whichever big card this is (H100 or H200)
                import re

                import torch

                total = torch.cuda.mem_get_info()[1] / 2**20
                run["argv"] = [re.sub(r"^--gpu-memory-utilization=.*",
                                      f"--gpu-memory-utilization={run['budget_mib'] / total:.4f}", a)
                               for a in run["argv"]]
                (RES / "argv.txt").write_text(" ".join(run["argv"]) + f"\n# total {total:.0f} MiB\n")
            if run.get("tools"):  # vLLM's own parser on a tool call in the model's format (tool_choice auto)
                sh(f"{VENV}/bin/python {REPO}/tools/tool_parser_check.py {run['model_dir']} "
                   f"{run['tools']} > {RES}/tool-parser.json 2>{RES}/tool-parser.err", check=False)
            proc, cold = start(run, run["name"] + "-cold")
            res = {"healthy_cold_s": cold, "exit": proc.poll()}
            if cold:
                res["models_no_key"] = http("GET", "http://127.0.0.1:8000/v1/models")[0]
                res["models_with_key"] = http("GET", "http://127.0.0.1:8000/v1/models", key=key)[0]
                res["replay"] = replay(run, key)
                if run.get("tools"):
                    res["tool_round_trip"] = tool_round_trip(run, key)
            stop(proc)
            if cold and run.get("warm"):
                proc, warm = start(run, run["name"] + "-warm")
                res["healthy_warm_s"] = warm
                if warm:
                    res["warm_chat"] = replay(run, key)[-3]
                stop(proc)
            summary[run["name"]] = res
            (RES / "replay.json").write_text(json.dumps(summary, indent=1))
        sh(f"du -sh /var/lib/llmhost/vllm/cache/* > {RES}/caches.txt 2>&1", check=False)
    finally:
        if hidden:
            os.rename("/usr/local/cuda.llmhost-hidden", "/usr/local/cuda")
        (RES / "DONE").write_text("done\n")


if __name__ == "__main__":
    main()
