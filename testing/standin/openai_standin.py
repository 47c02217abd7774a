#!/usr/bin/python3
"""STAND-IN for vLLM on the GPU-less test host: a small OpenAI-compatible server (stdlib only).

It is NOT vLLM. It speaks the same protocol vLLM's api_server speaks to Open WebUI and to llmhost's probe:
GET /health, GET /metrics (Prometheus text in vLLM's metric names, with fixed values), GET /v1/models,
POST /v1/chat/completions (plain and streamed as server-sent events), with the
same Bearer-key guard on /v1/* from VLLM_API_KEY. Its answer is fixed, says it is a stand-in and names its host
(so a fleet test can see which backend answered).

What it refuses, it refuses as vLLM 0.26.0 does (status, message and ErrorResponse shape from vLLM's source,
vllm/renderers/online_renderer.py and renderers/params.py, checked against the answers recorded on the GPU host by
tests/test_standin_contract.py):
- ``tools`` (tool_choice absent or "auto") without ``--enable-auto-tool-choice --tool-call-parser``: 400
  '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set';
- a prompt plus max_tokens beyond ``--max-model-len``: 400 "This model's maximum context length is ...". It has
  no tokenizer: it counts one token per 3 characters of the messages and tools; for every request Open WebUI was
  recorded sending that is at least what Llama 3's own tokenizer counts (3.5-4.8 characters per token;
  tests/test_standin_contract.py checks it with Meta's tokenizer.model), so it refuses no later than vLLM would.

How it ends, as vLLM does: SIGUSR1 stands for vLLM's engine dying under it (a dead multi-node stage, a crashed
worker): vLLM's server then exits with status 0 (measured with vLLM's CPU build: tests/test_realengine_multinode.py;
vLLM issue 48966), which systemd's Restart=on-failure alone would not restart.
"""

import argparse
import json
import os
import signal
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = "\n".join([
    "# TYPE vllm:num_requests_running gauge", "vllm:num_requests_running{{model_name=\"{m}\"}} 0",
    "# TYPE vllm:num_requests_waiting gauge", "vllm:num_requests_waiting{{model_name=\"{m}\"}} 0",
    "# TYPE vllm:kv_cache_usage_perc gauge", "vllm:kv_cache_usage_perc{{model_name=\"{m}\"}} 0.0",
    "# TYPE vllm:time_to_first_token_seconds histogram",
    "vllm:time_to_first_token_seconds_bucket{{model_name=\"{m}\",le=\"+Inf\"}} 0",
    "vllm:time_to_first_token_seconds_sum{{model_name=\"{m}\"}} 0.0",
    "vllm:time_to_first_token_seconds_count{{model_name=\"{m}\"}} 0",
    "# TYPE vllm:inter_token_latency_seconds histogram",
    "vllm:inter_token_latency_seconds_bucket{{model_name=\"{m}\",le=\"+Inf\"}} 0",
    "vllm:inter_token_latency_seconds_sum{{model_name=\"{m}\"}} 0.0",
    "vllm:inter_token_latency_seconds_count{{model_name=\"{m}\"}} 0", ""])
ANSWER = f"Hello from the llmhost stand-in (not vLLM) on {socket.gethostname()}."


def prompt_tokens(req: dict) -> int:
    """The stand-in's token count of a chat request: one per 3 characters of its messages and tools as JSON."""
    return -(-(len(json.dumps(req.get("messages", []))) + len(json.dumps(req.get("tools") or []))) // 3)


def refuse(req: dict, a) -> str | None:
    """vLLM 0.26.0's refusal of this chat request under these flags, or None (see the module docstring)."""
    if req.get("tools") and req.get("tool_choice") in (None, "auto") and not (
            a.enable_auto_tool_choice and a.tool_call_parser):
        return '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    if a.max_model_len:
        prompt = prompt_tokens(req)
        out = req.get("max_completion_tokens") or req.get("max_tokens") or 0
        if prompt + out > a.max_model_len:
            return (f"This model's maximum context length is {a.max_model_len} tokens. However, you requested "
                    f"{out} output tokens and your prompt contains {prompt} input tokens, for a total of "
                    f"{prompt + out} tokens. Please reduce the length of the input prompt or the number of "
                    "requested output tokens.")
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", required=True)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--requests-log", default=None, help="append each chat request here (JSON lines: the whole body)")
    p.add_argument("--enable-auto-tool-choice", action="store_true")
    p.add_argument("--tool-call-parser", default=None)
    a, _vllm_flags = p.parse_known_args()  # the planner's other flags are accepted, as vLLM would, and ignored
    key = os.environ.get("VLLM_API_KEY")

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self):
            if self.path.startswith("/v1/") and key and self.headers.get("Authorization") != f"Bearer {key}":
                self._send(401, {"error": "Unauthorized"})
                return False
            return True

        def do_GET(self):
            if self.path == "/health":
                return self._send(200, b"", "text/plain")
            if self.path == "/metrics":  # vLLM serves it without the key, as here
                return self._send(200, METRICS.format(m=a.model).encode(), "text/plain; version=0.0.4")
            if not self._authorized():
                return
            if self.path == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": a.model, "object": "model", "created": 0, "owned_by": "llmhost-standin",
                     "max_model_len": a.max_model_len}]})
            self._send(404, {"error": "not found"})

        def do_POST(self):
            if not self._authorized():
                return
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": "not found"})
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if a.requests_log:  # what the client sent, whole: recordings of Open WebUI's requests, prompts checked
                with open(a.requests_log, "a") as log:
                    log.write(json.dumps(req) + "\n")
            refusal = refuse(req, a)
            if refusal:
                return self._send(400, {"error": {"message": refusal, "type": "BadRequestError", "param": None,
                                                  "code": 400}})
            base = {"id": "chatcmpl-standin", "created": int(time.time()), "model": a.model}
            if not req.get("stream"):
                return self._send(200, {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for delta, finish in [({"role": "assistant", "content": ANSWER}, None), ({}, "stop")]:
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args):
            pass

    signal.signal(signal.SIGUSR1, lambda *_: os._exit(0))  # the engine died: vLLM's server exits 0
    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
