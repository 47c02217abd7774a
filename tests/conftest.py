import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REPO = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
DEFAULT_SHA = "db1f81ad4b8c7e39777509fac66c652eb0a52f91"
PYINFRA = [sys.executable, "-m", "pyinfra"]
# The real tier's Open WebUI admin: every deploy the tests run gets its password from the controller's environment
# (the deploy's openwebui_admin_password_env); the test of a generated password empties it for its own runs.
# Its password is one users could paste (issue 27): quotes, a backslash, $, %, #, ;, non-ASCII and spaces at both
# ends, each of which an env file, a unit or a shell would change if it were not quoted for it.
ADMIN = {"name": "Admin", "email": "admin@llmhost.home.arpa", "password": ' a "long" test pass\\word $HOME %h #42 ;é '}
os.environ.setdefault("LLMHOST_ADMIN_PASSWORD", ADMIN["password"])


def require_test_host() -> None:
    """The real tier needs root and systemd-nspawn: skip on a machine without them, fail in CI."""
    from testing import testhost

    reason = testhost.why_not()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"real tier cannot run in CI: {reason}")
        pytest.skip(f"no test host on this machine: {reason}")


def http(url: str, data: dict | None = None, token: str | None = None, timeout: int = 60):
    """One HTTP call to a test host: (status, JSON body) or (status, text) when the body is not JSON. Never through
    a proxy of the environment (the test hosts are local)."""
    import requests

    with requests.Session() as session:
        session.trust_env = False
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = session.request("POST" if data is not None else "GET", url, json=data, headers=headers, timeout=timeout)
    try:
        return r.status_code, r.json() if r.content else None
    except ValueError:
        return r.status_code, r.text


def admin_token(base: str) -> str:
    """Sign in as the admin the deploy created (an Open WebUI too old to create one from its environment gets the
    first signup instead, which is the admin there)."""
    code, body = http(base + "/api/v1/auths/signin", {"email": ADMIN["email"], "password": ADMIN["password"]})
    if code != 200:
        code, body = http(base + "/api/v1/auths/signup", ADMIN)
    assert code == 200 and body["role"] == "admin", body
    return body["token"]


def deploy(*args: str, data: dict | None = None, inventory: str = "inventories/home.py",
           env_extra: dict | None = None, timeout: int = 1500) -> subprocess.CompletedProcess:
    """The product's command against the test host(s): pyinfra -y INVENTORY deploy.py ARGS --data k=v ...
    (stdout and stderr together in .stdout)."""
    cmd = PYINFRA + ["-y", inventory, "deploy.py", *args]
    for k, v in (data or {}).items():
        cmd += ["--data", f"{k}={v}"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("LLMHOST_HOST", "HF_TOKEN")}, **(env_extra or {})}
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                       env=env)
    p.stdout += p.stderr
    return p


def on_host(h: dict, command: str, check: bool = True) -> str:
    """Run a command on a test host as root; a failure shows its output."""
    from testing import testhost

    p = testhost.ssh(h["address"], command, check=False, timeout=300)
    assert p.returncode == 0 or not check, f"{command}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def one_host():
    """A fresh disposable test host (and the local hub) for one real-tier module."""
    from testing import hub, testhost

    require_test_host()
    hub.up()
    yield testhost.up(1, hub_port=hub.PORT)[0]
    testhost.down()
    hub.down()


@pytest.fixture(scope="session")
def offline_hf_home(tmp_path_factory) -> Path:
    """A controller HF cache holding only the pinned default model's config files (fast tier: no network)."""
    home = tmp_path_factory.mktemp("hf")
    snap = home / "hub" / f"models--{DEFAULT_REPO.replace('/', '--')}" / "snapshots" / DEFAULT_SHA
    snap.mkdir(parents=True)
    for f in (REPO / "tests/fixtures/models/llama-3.1-8b-instruct-awq-int4").glob("*.json"):
        shutil.copy(f, snap / f.name)
    return home


@pytest.fixture
def fake_plan(offline_hf_home):
    """Run the whole deploy against a scripted @fake host: (returncode, plan JSON or None, stdout+stderr)."""

    def run(scenario: str, data: dict | None = None, diff: bool = False, online: bool = False):
        env = {**os.environ, "HF_HOME": str(offline_hf_home), "HF_HUB_OFFLINE": "1", "LLMHOST_FAKE": scenario,
               "LLMHOST_FAKE_DATA": repr(data or {})}
        if online:  # the controller resolves the model on hf_endpoint (tests point it at loopback only)
            env.pop("HF_HUB_OFFLINE")
        args = ["tests/fake_hosts.py", "deploy.py", "--dry"] + (["--diff"] if diff else ["--json"])
        p = subprocess.run(PYINFRA + args, cwd=REPO, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=300)
        plan = None
        if not diff and p.returncode == 0 and p.stdout.strip().startswith("{"):
            plan = json.loads(p.stdout)
        return p.returncode, plan, p.stdout + p.stderr

    return run


@pytest.fixture
def fake_apply(offline_hf_home):
    """Execute the whole deploy against a scripted @fake host (pyinfra's fake connector answers every command,
    scripted or with success): (returncode, the commands it was asked to run, output). Unlike a dry run this
    evaluates every ``_if`` at execution time, as on a real host."""

    def run(scenario: str, data: dict | None = None, env_extra: dict | None = None):
        env = {**os.environ, "HF_HOME": str(offline_hf_home), "HF_HUB_OFFLINE": "1", "LLMHOST_FAKE": scenario,
               "LLMHOST_FAKE_DATA": repr(data or {}), **(env_extra or {})}
        p = subprocess.run(PYINFRA + ["-y", "--debug", "tests/fake_hosts.py", "deploy.py"], cwd=REPO, env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        out = p.stdout + p.stderr
        marker = f"[fake] simulating command on @fake/{scenario}: "
        commands = [line.split(marker, 1)[1] for line in out.splitlines() if marker in line]
        return p.returncode, commands, out

    return run


def changed(plan: dict) -> set[str]:
    return {op["name"] for op in plan["plan"] if op["hosts_with_change"]}


def conditional(plan: dict) -> set[str]:
    return {op["name"] for op in plan["plan"] if op["hosts_with_conditional_change"]}


def names(plan: dict) -> set[str]:
    return {op["name"] for op in plan["plan"]}


def host_program(tmp_path, module: str, values: dict, name: str | None = None):
    """One of operations/hostside's programs installed as the deploy installs it (shared_ops.host_program): the
    file itself, executable, and its values as JSON beside it. Returns its path."""
    import shutil

    from operations.core import boundary
    from operations.shared_ops import HOSTSIDE

    path = tmp_path / (name or module)
    shutil.copy(HOSTSIDE / f"{module}.py", path)
    path.chmod(0o755)
    path.with_name(path.name + ".json").write_text(boundary.json_value(values) + "\n")
    return path


@pytest.hookimpl(trylast=True)  # after -m's deselection: the fast tier's process has no engine test left
def pytest_collection_modifyitems(config, items):
    """In CI, the loopback engine's venv (vLLM's CPU build: minutes of downloads on a cold box) builds in a thread
    while the rest of the real tier runs, and the tests that need it run last."""
    engine = [i for i in items if i.nodeid.startswith("tests/test_realengine")]
    rest = [i for i in items if not i.nodeid.startswith("tests/test_realengine")]
    if os.environ.get("CI") and engine and rest:
        items[:] = rest + engine
        from tests.test_realengine import prebuild

        prebuild()
