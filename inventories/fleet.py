"""A fleet: several GPU boxes behind one Open WebUI, through a router (see the README's "Fleet" section).

    export LLMHOST_VLLM_API_KEY=$(openssl rand -hex 32)   # once; keep it (every run of the fleet needs the same key)
    pyinfra inventories/fleet.py deploy.py

Groups give the roles: ``gpu_hosts`` serve vLLM (each planned on its own card), ``ui_hosts`` serve Open WebUI and the
router in front of every GPU host. pyinfra deploys the hosts in parallel. ``fleet_address`` is each host's address
on the network the hosts talk over (a private LAN): GPU hosts bind vLLM there and their firewall admits only the UI
hosts' fleet addresses. Edit the hosts below; settings per group go in the group's dict (pyinfra group data).

LLMHOST_FLEET_JSON (used by the tests) replaces the example hosts with a JSON file:
``{"gpu_hosts": [[name, data], ...], "ui_hosts": [[name, data], ...]}``.
"""

import json
import os
from pathlib import Path

FLEET = {"vllm_api_key_env": "LLMHOST_VLLM_API_KEY"}  # data every host of the fleet shares

if os.environ.get("LLMHOST_FLEET_JSON"):
    _spec = json.loads(Path(os.environ["LLMHOST_FLEET_JSON"]).read_text())
    gpu_hosts = ([tuple(h) for h in _spec["gpu_hosts"]], dict(FLEET))
    ui_hosts = ([tuple(h) for h in _spec["ui_hosts"]], dict(FLEET))
else:
    gpu_hosts = ([
        ("gpu1.lan", {"ssh_user": "me", "_sudo": True, "fleet_address": "192.168.10.11", "vllm_host": "192.168.10.11",
                      "gpu_card": "rtx-3060-12gb"}),
        ("gpu2.lan", {"ssh_user": "me", "_sudo": True, "fleet_address": "192.168.10.12", "vllm_host": "192.168.10.12",
                      "gpu_card": "rtx-3060-12gb"}),
    ], dict(FLEET))
    ui_hosts = ([
        ("ui.lan", {"ssh_user": "me", "_sudo": True, "fleet_address": "192.168.10.10", "gpu_host": False}),
    ], dict(FLEET))

for _group, (_hosts, _) in (("gpu_hosts", gpu_hosts), ("ui_hosts", ui_hosts)):
    _names = [h[0] for h in _hosts]  # pyinfra would merge a name listed twice silently (the later data wins)
    _twice = sorted({n for n in _names if _names.count(n) > 1})
    if _twice:
        raise SystemExit(f"inventory: host(s) {', '.join(_twice)} listed more than once in {_group}: list each once")
if not gpu_hosts[0] and not ui_hosts[0]:
    raise SystemExit("inventory: gpu_hosts and ui_hosts are empty: list the fleet's hosts (pyinfra would deploy "
                     "nothing and exit 0)")
