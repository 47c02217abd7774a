"""Verify what the deploy promises: the GPU is visible, vLLM answers /health and /v1/models and completes a chat,
Open WebUI answers /health. An unchanged, healthy host is a noop; anything restarted is waited for."""

from __future__ import annotations

import json

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation

from operations.context import Context


class Probe(FactBase):
    """One look by the host's probe (JSON, no secrets); {"ok": false} when it is not installed yet.

    Sample output::

        {"completion": "Hello!", "models": ["astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit"], "ok": true, "vllm_health": 200, "webui_health": 200}
    """

    @staticmethod
    def default():
        return {"ok": False}

    def command(self, probe: str) -> str:
        return f"if [ -x {probe} ]; then {probe} || true; else echo '{{\"ok\": false, \"error\": \"no probe\"}}'; fi"

    def process(self, output):
        try:
            return json.loads(output[-1])
        except (ValueError, IndexError):
            return {"ok": False, "error": "\n".join(output)}


@operation()
def healthy(probe: str, timeout: int, recheck: bool = False):
    """Ensure the services answer; wait up to ``timeout`` seconds only when something changed or is unwell."""
    now = host.get_fact(Probe, probe=probe)
    if now.get("ok") and not recheck:
        host.noop(f"healthy: models {now.get('models')}, completion {now.get('completion')!r}, "
                  f"Open WebUI /health {now.get('webui_health')}")
        return
    yield f"{probe} --wait {timeout}"


@deploy("Verify")
def ensure(ctx: Context, changed: bool):
    s = ctx.s
    healthy(name="GPU visible, vLLM /health + /v1/models + a chat completion, Open WebUI /health",
            probe=ctx.probe, timeout=s.verify_timeout_s, recheck=changed)
    address = host.data.get("ssh_hostname") or host.name
    where = address if s.openwebui_host not in ("127.0.0.1", "::1") else f"{address} (loopback: ssh -L)"
    logger.info(f"{host.print_prefix}Open WebUI: http://{where}:{s.openwebui_port}/  "
                "(the first account to sign up becomes the admin)")
