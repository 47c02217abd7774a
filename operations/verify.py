"""Verify what the deploy promises: the GPU is visible, vLLM answers /health and /v1/models and completes a chat,
Open WebUI answers /health. An unchanged, healthy host is a noop; anything restarted is waited for."""

from __future__ import annotations

import json

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, deploy, operation
from pyinfra.operations.util import any_changed

from operations.context import Context


class Probe(FactBase):
    """One look by the host's probe (JSON, no secrets); {"ok": false} when it is not installed yet.

    Sample output::

        {"completion": "Hello!", "models": ["astronomer/Llama-3-8B-Instruct-GPTQ-4-Bit"], "ok": true, "api_health": 200, "webui_health": 200}
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


def announce(message: str) -> bool:
    """Run on the controller after the probe passed (a FunctionCommand): the URL comes only once it answers."""
    logger.info(message)
    return True


@operation()
def healthy(probe: str, timeout: int, recheck: bool = False, url: str | None = None):
    """Ensure the services answer; wait up to ``timeout`` seconds only when something changed or is unwell.

    + probe: the host's llmhost-probe
    + timeout: seconds to wait for both services
    + recheck: something changed in this run, so look again even if the host looked healthy before
    + url: printed once the probe passed (where to open Open WebUI)"""
    now = host.get_fact(Probe, probe=probe)
    if now.get("ok") and not recheck:
        host.noop(f"healthy: models {now.get('models')}, completion {now.get('completion')!r}, "
                  f"Open WebUI /health {now.get('webui_health')}" + (f"; {url}" if url else ""))
        return
    yield f"{probe} --wait {timeout}"
    if url:
        yield FunctionCommand(announce, (url,), {})


@deploy("Verify")
def ensure(ctx: Context, changes: list):
    s = ctx.s
    address = host.data.get("ssh_hostname") or host.name
    where = address if s.openwebui_host not in ("127.0.0.1", "::1") else f"{address} (loopback: ssh -L)"
    open_at = f"https://{s.https_domain}/" if s.https_domain else f"http://{where}:{s.openwebui_port}/"
    url = (f"{host.print_prefix}Open WebUI answers at {open_at}  "
           "(the first account to sign up becomes the admin)") if ctx.serves_webui else None
    what = ("GPU visible, " if ctx.serves_vllm else "") + (
        "the router's /health + /v1/models + a chat completion through it" if ctx.routed else
        "vLLM /health + /v1/models + a chat completion") + (", Open WebUI /health" if ctx.serves_webui else "")
    healthy(name=what, probe=ctx.probe, timeout=s.verify_timeout_s, url=url)
    healthy(name="The same again after this run's changes (a service restarted)", probe=ctx.probe,
            timeout=s.verify_timeout_s, recheck=True, url=url, _if=any_changed(*changes))
