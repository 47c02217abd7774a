"""The one host llmhost deploys to.

Set LLMHOST_HOST to your GPU box (``user@address`` or ``address``; the SSH user needs sudo) and run
``pyinfra inventories/home.py deploy.py``. The usual home routes, from the environment:

    LLMHOST_SSH_KEY=~/.ssh/id_ed25519     the SSH key (else ssh-agent / ~/.ssh defaults)
    LLMHOST_SUDO_PASSWORD=...             sudo's password for a non-root user (or pyinfra's --use-sudo-password
                                          prompt on a terminal); never written anywhere by llmhost

Override settings here (every setting: docs/settings.md), e.g.::

    hosts = [(address, {"ssh_user": "me", "_sudo": True, "vllm_max_num_seqs": 8})]

With LLMHOST_HOST unset, the target is the local disposable test host (a systemd-nspawn Debian 12 container that
`make test-host-up` / `python -m testing.testhost up` starts): no GPU, so GPU steps are reported as skipped and vLLM
is replaced by a named stand-in. Its connection data is written by the test-host tool to
.cache/testhost/inventory.json.
"""

import json
import os
import re
from pathlib import Path

target = os.environ.get("LLMHOST_HOST")

if target and not re.fullmatch(r"([a-z_][a-z0-9_.-]*@)?([A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:.]+)",
                                           target):
    raise SystemExit(f"LLMHOST_HOST={target!r} is not [user@]address: set e.g. LLMHOST_HOST=me@gpu-box or "
                     "LLMHOST_HOST=192.168.1.50 (or unset it for the local test host)")
if target:
    user, _, address = target.rpartition("@")
    data = {"_sudo": True} if user and user != "root" else {}
    if user:
        data["ssh_user"] = user
    if os.environ.get("LLMHOST_GPU_CARD"):
        data["gpu_card"] = os.environ["LLMHOST_GPU_CARD"]
    if os.environ.get("LLMHOST_SSH_KEY"):
        data["ssh_key"] = os.path.expanduser(os.environ["LLMHOST_SSH_KEY"])
    if os.environ.get("LLMHOST_SUDO_PASSWORD"):
        data["_sudo_password"] = os.environ["LLMHOST_SUDO_PASSWORD"]
    hosts = [(address, data)]
else:
    default = Path(__file__).resolve().parent.parent / ".cache" / "testhost" / "inventory.json"
    generated = Path(os.environ.get("LLMHOST_INVENTORY_JSON", default))
    if not generated.exists():
        raise SystemExit("LLMHOST_HOST is not set and no test host is running: set LLMHOST_HOST=user@gpu-box, "
                         "or start the local test host with `make test-host-up`")
    hosts = [tuple(h) for h in json.loads(generated.read_text())]
    if not hosts:
        raise SystemExit(f"{generated} lists no host: start the test host again with `make test-host-up`")

names = [h[0] for h in hosts]
duplicates = sorted({n for n in names if names.count(n) > 1})
if duplicates:
    raise SystemExit(f"inventory: host name(s) {', '.join(duplicates)} appear more than once: give each host one "
                     "entry (pyinfra would silently merge them)")
