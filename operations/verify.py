"""Verify what the deploy promises: the GPU is visible, vLLM answers /health and /v1/models and completes a chat,
Open WebUI answers /health. An unchanged, healthy host is a noop; anything restarted is waited for."""

from __future__ import annotations

import json

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, State, deploy, operation
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.operations.util import any_changed

from operations.context import Context
from operations.core.boundary import shell_line, shell_word


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


class Where(BaseStateCallback):
    """Every applied run ends with where Open WebUI answers: after pyinfra's results, for each host that did not fail
    (its verify passed). A dry run ends before the operations run, so it prints none."""

    urls: dict[str, str] = {}

    @staticmethod
    def host_disconnect(state: State, h) -> None:
        if state.current_stage == StateStage.Disconnect and h not in state.failed_hosts and h.name in Where.urls:
            logger.info(Where.urls.pop(h.name))


def announce_at_the_end(url: str) -> None:
    """Where Open WebUI answers, printed when pyinfra disconnects from this host after an applied run."""
    Where.urls[host.name] = url
    if not any(isinstance(c, Where) for c in host.state.callback_handlers):
        host.state.add_callback_handler(Where())


@operation()
def healthy(probe: str, timeout: int, recheck: bool = False):
    """Ensure the services answer; wait up to ``timeout`` seconds only when something changed or is unwell.

    + probe: the host's llmhost-probe
    + timeout: seconds to wait for both services
    + recheck: something changed in this run, so look again even if the host looked healthy before"""
    now = host.get_fact(Probe, probe=probe)
    if now.get("ok") and not recheck:
        host.noop(f"healthy: models {now.get('models')}, completion {now.get('completion')!r}, "
                  f"Open WebUI /health {now.get('webui_health')}")
        return
    yield shell_line([probe, "--wait", str(timeout)])


def show_secret_once(path: str, variable: str, who: str) -> bool:
    """Run on the controller at the end: read a secret generated in this run from its root-only file and print it
    once (the command's own output is not printed; the value is in no diff, unit or command line)."""
    ok, output = host.run_shell_command(f"sed -n 's/^{variable}=//p' {shell_word(path)}", print_output=False,
                                        print_input=False)
    value = output.stdout.strip() if ok else ""
    logger.info(f"{host.print_prefix}{who}: {value}  (shown once; kept root-only in {path})" if value else
                f"{host.print_prefix}{who}: see {path} (root-only)")
    return True


@operation()
def admin_shown(path: str, email: str):
    """Show the admin's generated password once, after Open WebUI answered (run with ``_if`` on its creation).

    + path: the root-only env file holding WEBUI_ADMIN_PASSWORD
    + email: the admin's sign-in email"""
    yield FunctionCommand(show_secret_once, (path, "WEBUI_ADMIN_PASSWORD", f"Open WebUI admin {email}, password"), {})


@deploy("Verify")
def ensure(ctx: Context, changes: list, new_admin=None):
    s = ctx.s
    address = host.data.get("ssh_hostname") or host.name
    where = address if s.openwebui_host not in ("127.0.0.1", "::1") else f"{address} (loopback: ssh -L)"
    open_at = f"https://{s.https_domain}/" if s.https_domain else f"http://{where}:{s.openwebui_port}/"
    url = (f"{host.print_prefix}Open WebUI answers at {open_at}  (sign in as the admin {s.openwebui_admin_email})"
           if ctx.serves_webui else None)
    what = ("GPU visible, " if ctx.serves_vllm else "") + (
        "the router's /health + /v1/models + a chat completion through it" if ctx.routed else
        "vLLM /health + /v1/models + a chat completion") + (
        ", Open WebUI /health + a streamed chat as its admin" if ctx.serves_webui else "")
    healthy(name=what, probe=ctx.probe, timeout=s.verify_timeout_s)
    healthy(name="The same again after this run's changes (a service restarted)", probe=ctx.probe,
            timeout=s.verify_timeout_s, recheck=True, _if=any_changed(*changes))
    if url:
        announce_at_the_end(url)
    if new_admin is not None:
        admin_shown(name="Open WebUI's admin password (generated in this run: shown once)",
                    path=f"{s.config_root}/open-webui.admin.env", email=s.openwebui_admin_email,
                    _if=new_admin.did_change)
