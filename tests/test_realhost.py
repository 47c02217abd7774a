"""Real tier: the whole deploy over SSH against the disposable Debian 12 systemd-nspawn test host.

The host has no GPU: driver, CUDA and container-toolkit steps are proven here only as plans and reported as
skipped (the test names say so), and vLLM is replaced by a named OpenAI-compatible stand-in. Everything else
(users, directories, venvs, weights from a real HF-compatible hub, units, Open WebUI) runs for real.
Tests run in file order and share one host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from operations.core.boundary import shell_line
from testing import hub, testhost
from tests.conftest import ADMIN, admin_token, REPO, http, require_test_host

pytestmark = pytest.mark.realhost
RUN_LOGS: list[str] = []  # every pyinfra output of this module, grepped for secrets at the end


@pytest.fixture(scope="module")
def host():
    require_test_host()
    hub.up()
    hosts = testhost.up(1, hub_port=hub.PORT)
    yield hosts[0]
    testhost.down()
    hub.down()


def pyinfra(*args: str, data: dict | None = None, timeout: int = 1500, env_extra: dict | None = None
            ) -> subprocess.CompletedProcess:
    yes = [] if "--dry" in args else ["-y"]  # -y would skip the change table of a dry run
    cmd = [sys.executable, "-m", "pyinfra", *yes, "inventories/home.py", "deploy.py", *args]
    for k, v in (data or {}).items():
        cmd += ["--data", f"{k}={v}"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("LLMHOST_HOST", "HF_TOKEN")}, **(env_extra or {})}
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
                       env=env)
    p.stdout = p.stdout + p.stderr  # pyinfra logs to both; tests read them together
    RUN_LOGS.append(p.stdout)
    return p


def totals(out: str) -> tuple[int, int]:
    """(operations, changed) from pyinfra's own results table ('Grand total  HOSTS  SUCCESS  ERROR  NO CHANGE')."""
    m = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert m, out[-3000:]
    num = lambda s: 0 if s == "-" else int(s)  # noqa: E731
    return int(m.group(1)), num(m.group(2))


def sh(h: dict, command: str, check: bool = True) -> str:
    return testhost.ssh(h["address"], command, check=check).stdout


def host_state(h: dict) -> str:
    """A fingerprint of everything the deploy could touch (paths, sizes, mtimes, modes)."""
    return sh(h, "find /etc /opt /var/lib/llmhost /usr/local -xdev -printf '%p %s %T@ %m\\n' 2>/dev/null "
                 "| sort | sha256sum")


def main_pid(h: dict, unit: str) -> str:
    return sh(h, f"systemctl show -p MainPID --value {unit}").strip()


def test_fresh_host_dry_diff_plans_every_component_gpu_steps_skipped_as_plans(host):
    p = pyinfra("--dry", "--diff")
    assert p.returncode == 0, p.stdout[-3000:]
    out = p.stdout
    for step in ("NVIDIA driver (skipped: gpu_host=False)", "CUDA toolkit (skipped: gpu_host=False)",
                 "Container toolkit (skipped: gpu_host=False)", "Model weights | Weights", "vllm.service",
                 "open-webui.service", "Open WebUI 0.12.4 venv", "Verify |"):
        assert step in out, step
    assert "Will create /etc/systemd/system/vllm.service" in out  # the unit diff itself
    # issue 30: a GPU-less host's plan is labelled as the named card's, right before the table
    assert ("this host has no GPU (gpu_host=False): the plan below is the one for gpu_card=rtx-3060-12gb "
            "(LLMHOST_GPU_CARD), shown for reference; nothing here runs it") in out


def test_unknown_repo_fails_before_any_change(host):
    before = host_state(host)
    p = pyinfra(data={"model_repo": "llmhost-test/does-not-exist"})
    assert p.returncode != 0
    assert "model_repo=llmhost-test/does-not-exist" in p.stdout + p.stderr
    assert host_state(host) == before


def test_unknown_revision_fails_before_any_change(host):
    before = host_state(host)
    p = pyinfra(data={"model_revision": "0" * 40})
    assert p.returncode != 0
    assert "model_revision" in p.stdout + p.stderr
    assert host_state(host) == before


def test_unknown_embedding_revision_fails_before_any_change(host):
    before = host_state(host)
    p = pyinfra(data={"rag_embedding_revision": "ab" * 20})
    assert p.returncode != 0
    assert f"rag_embedding_revision={'ab' * 20}" in p.stdout and "Traceback" not in p.stdout, p.stdout[-2000:]
    assert host_state(host) == before


def test_apply_runs_every_non_gpu_step_for_real(host):
    t0 = time.monotonic()
    p = pyinfra()
    print(f"first apply: {time.monotonic() - t0:.0f} s")
    assert p.returncode == 0, p.stdout[-4000:]
    assert sh(host, "systemctl is-active vllm open-webui").split() == ["active", "active"]
    # The URL is printed only after the operations ran (verify passed): at the very end, after the results table.
    url = p.stdout.find("Open WebUI answers at http://")
    assert url > p.stdout.find("--> Results:") > p.stdout.find("--> Beginning operation run") > 0, p.stdout[-3000:]
    # Downloads in pyinfra's default output: the total up front (the planner's estimate here: the dry run before
    # cached config.json on the controller, and a cached pinned commit is not asked of the hub again), then the
    # fetcher's own lines as they come (this tiny repo takes under 30 s, so only its last line): every byte of the
    # hub's sizes on disk
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    seen = [line for line in p.stdout.splitlines() if "download" in line or "llmhost: " in line]
    assert re.search(rf"to download: weights {st['repo']}@{st['commit'][:12]}, (about [\d.]+ GiB \(the planner's "
                     r"estimate|[\d.]+ GiB \(the hub's sizes\))", p.stdout), seen
    done = re.search(rf"llmhost: weights {st['repo']}: ([\d.]+ \w+) of ([\d.]+ \w+) \((\d+)%\) on disk, "
                     r"([\d.]+ \w+) fetched in \d+ s", p.stdout)
    assert done and done.group(1) == done.group(2) == done.group(4) and done.group(3) == "100", seen


def test_weights_snapshot_is_at_the_pinned_revision(host):
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    org, name = st["repo"].split("/")
    snap = f"/var/lib/llmhost/models/hub/models--{org}--{name}/snapshots/{st['commit']}"
    files = sh(host, f"ls {snap}").split()
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors"} <= set(files)
    marker = json.loads(sh(host, f"cat /var/lib/llmhost/models/.complete-{org}--{name}-{st['commit']}"))
    assert marker["commit"] == st["commit"]
    assert sh(host, f"stat -c %U {snap}/config.json").strip() == "llmhost-vllm"


def test_openwebui_admin_models_and_chat_through_the_standin(host):
    base = f"http://{host['address']}:8080"
    assert http(base + "/health")[0] == 200
    token = admin_token(base)  # the admin the deploy created (its password from the controller's environment)
    code, models = http(base + "/api/models", token=token)
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    assert st["repo"] in [m["id"] for m in models["data"]]
    code, chat = http(base + "/api/chat/completions", {"model": st["repo"], "stream": False,
                                                       "messages": [{"role": "user", "content": "hi"}]}, token=token)
    assert code == 200, chat
    assert "stand-in" in chat["choices"][0]["message"]["content"]
    # Signup is closed after the first admin: no open registration.
    assert http(base + "/api/v1/auths/signup", {**ADMIN, "email": "eve@example.invalid"})[0] == 403


def test_a_document_is_embedded_offline_and_its_passage_reaches_the_model(host):
    """Issue 12 part 4: the pinned embedding model was fetched with the weights step (here the hub's tiny
    sentence-transformers model, random weights), Open WebUI embeds an uploaded document with it under OFFLINE_MODE,
    and the retrieved passage is in the prompt the stand-in receives (its --requests-log)."""
    import requests

    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    base = f"http://{host['address']}:8080"
    env = sh(host, "cat /etc/llmhost/open-webui.env")
    snap = f"/var/lib/llmhost/open-webui/embedding/models--llmhost-test--tiny-embedding/snapshots/{st['embedding_commit']}"
    assert f"RAG_EMBEDDING_MODEL={snap}" in env and "OFFLINE_MODE=true" in env and "HF_HUB_OFFLINE=1" in env
    assert sh(host, f"stat -c %U {snap}/modules.json").strip() == "llmhost-webui"
    code, body = http(base + "/api/v1/auths/signin", {"email": ADMIN["email"], "password": ADMIN["password"]})
    token = body["token"]
    doc = "Lighthouse notes. The keeper painted the lighthouse door ultramarine-42 in the spring."
    with requests.Session() as session:
        session.trust_env = False
        r = session.post(base + "/api/v1/files/", headers={"Authorization": f"Bearer {token}"},
                         files={"file": ("lighthouse.txt", doc.encode(), "text/plain")}, timeout=300)
        assert r.status_code == 200, r.text
        fid = r.json()["id"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # embedding runs after the upload returns
            status = session.get(f"{base}/api/v1/files/{fid}/process/status",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
            if status.status_code != 200 or status.json().get("status") in ("completed", "failed"):
                break
            time.sleep(1)
        assert status.status_code != 200 or status.json().get("status") == "completed", status.text
    sh(host, ": > /var/lib/llmhost/vllm/standin-requests.jsonl")
    code, chat = http(base + "/api/chat/completions", {
        "model": st["repo"], "stream": False, "files": [{"type": "file", "id": fid}],
        "messages": [{"role": "user", "content": "What colour is the lighthouse door?"}]}, token=token, timeout=300)
    assert code == 200, chat
    sent = sh(host, "cat /var/lib/llmhost/vllm/standin-requests.jsonl")
    assert "ultramarine-42" in sent, sent[-2000:]


def test_second_apply_reports_zero_changes_and_restarts_nothing(host):
    """A re-run of a converged host changes nothing and restarts nothing (same main PIDs). Its speed is a
    benchmark, not a test (`make bench`: the no-op against a trivial one-operation deploy, as a ratio in one run)."""
    pids = sh(host, "systemctl show -p MainPID --value vllm.service open-webui.service")
    p = pyinfra()
    assert p.returncode == 0, p.stdout[-3000:]
    ops, changed = totals(p.stdout)
    assert ops > 20 and changed == 0, p.stdout[-3000:]
    assert sh(host, "systemctl show -p MainPID --value vllm.service open-webui.service") == pids
    assert p.stdout.find(f"Open WebUI answers at http://{host['address']}:8080/") > p.stdout.find("--> Results:") > 0


def test_changed_vllm_flag_diffs_and_restarts_only_vllm(host):
    webui_pid, vllm_pid = main_pid(host, "open-webui"), main_pid(host, "vllm")
    dry = pyinfra("--dry", "--diff", data={"vllm_max_num_seqs": 8})
    assert dry.returncode == 0
    diff_lines = [ln.strip() for ln in dry.stdout.splitlines() if re.match(r"\s+[-+] ", ln)]
    relevant = [ln for ln in dry.stdout.splitlines() if "max-num-seqs" in ln or "Will " in ln or "rror" in ln]
    assert any("--max-num-seqs=8" in ln and ln.startswith("+") for ln in diff_lines), relevant
    assert all("ExecStart=" in ln for ln in diff_lines), diff_lines  # only the vLLM unit's ExecStart line
    p = pyinfra(data={"vllm_max_num_seqs": 8})
    assert p.returncode == 0, p.stdout[-3000:]
    assert "--max-num-seqs=8" in sh(host, "systemctl show -p ExecStart --value vllm")
    assert main_pid(host, "vllm") != vllm_pid
    assert main_pid(host, "open-webui") == webui_pid
    again = pyinfra(data={"vllm_max_num_seqs": 8})
    assert totals(again.stdout)[1] == 0


def test_openwebui_upgrade_pin_keeps_the_admin(host):
    """A changed Open WebUI setting restarts only Open WebUI; its database (the admin) survives."""
    vllm_pid = main_pid(host, "vllm")
    p = pyinfra(data={"vllm_max_num_seqs": 8, "openwebui_enable_signup": True})
    assert p.returncode == 0, p.stdout[-3000:]
    assert main_pid(host, "vllm") == vllm_pid
    code, body = http(f"http://{host['address']}:8080/api/v1/auths/signin",
                      {"email": ADMIN["email"], "password": ADMIN["password"]})
    assert code == 200 and body["role"] == "admin"
    assert pyinfra(data={"vllm_max_num_seqs": 8}).returncode == 0  # back to the default


@pytest.mark.parametrize("unit,signal", [("vllm", "KILL"), ("open-webui", "KILL"), ("vllm", "USR1")])
def test_kill_9_brings_the_service_back(host, unit, signal):
    """systemd restarts it (Restart=on-failure, RestartSec=5). USR1: the stand-in exits 0 as vLLM's server does when
    its engine dies (RestartForceExitStatus=0; without it the unit stays down). The wait is a generous give-up
    bound, not a timing claim: how fast it comes back is `make bench`'s figure."""
    pid = main_pid(host, unit)
    sh(host, f"kill -{signal} {pid}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        now = main_pid(host, unit)
        if now not in ("0", pid) and sh(host, f"systemctl is-active {unit}", check=False).strip() in (
                "active", "activating"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{unit} was not restarted (gave up after 300 s)")


def test_units_pass_systemd_analyze_verify(host):
    out = testhost.ssh(host["address"], "systemd-analyze verify /etc/systemd/system/vllm.service "
                                        "/etc/systemd/system/open-webui.service", check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def boundary_corpus(n: int = 300, seed: int = 27) -> list[str]:
    """Values for systemd to read back: the awkward ones users paste, then ``n`` generated from the same alphabet
    as the fast tier's hypothesis strategies (tests/test_values.py), seeded; printable only (the boundary refuses
    control characters, which the fast tier checks)."""
    import random

    alphabet = list(" \"'\\$%`#;&|<>(){}[]*?!~=,:@/-éü€😀aZ09_.") + ["$(id)", "${HOME}", "%h", "%%", "\\n", "--x"]
    rnd = random.Random(seed)
    fixed = ["", " ", " lead", "trail ", '"', "'", "\\", "x\\", "$X", "${X}", "$$", "%", "%h", "%%h", ";", "a;b",
             "#c", "a b", "pa ss' \"w\\d $HOME %h #42 ;é"]
    return fixed + ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 24))) for _ in range(n)]


def test_values_reach_systemd_and_the_hosts_reader_intact(host):
    """Issue 27, judged by systemd itself: the corpus written by the one env-file writer into an EnvironmentFile
    and by the one command-line writer into a unit's ExecStart; a real unit on the test host records what it got
    (argv and environment); the probe's env-file reader (the host's own, operations/hostside/probe.py) reads the
    same file. Each must be exactly the corpus: no value changed, no extra argument or variable."""
    from operations.core import boundary

    values = boundary_corpus()
    env = boundary.env_file({f"V_{i}": v for i, v in enumerate(values)}, "corpus")
    code = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() "
            "if k.startswith('V_')}}, open('/run/llmhost-values.json', 'w'))")
    unit = ("[Service]\nType=oneshot\nEnvironmentFile=/run/llmhost-values.env\n"
            f"ExecStart={boundary.exec_line(['/usr/bin/python3', '-c', code, *values], 'corpus')}\n")
    sh(host, f"cat > /run/llmhost-values.env <<'LLMHOST_EOF'\n{env}LLMHOST_EOF\n"
             f"cat > /etc/systemd/system/llmhost-values.service <<'LLMHOST_EOF'\n{unit}LLMHOST_EOF\n"
             "systemctl daemon-reload && systemctl start llmhost-values.service")
    got = json.loads(sh(host, "cat /run/llmhost-values.json"))
    assert got["argv"] == values
    assert got["env"] == {f"V_{i}": v for i, v in enumerate(values)}
    read = json.loads(sh(host, "/opt/llmhost/tools/bin/python -c 'import json, sys; from importlib.machinery import "
                               "SourceFileLoader; p = SourceFileLoader(\"probe\", \"/opt/llmhost/bin/llmhost-probe\")"
                               ".load_module(); print(json.dumps([p.env_value(\"/run/llmhost-values.env\", "
                               f"\"V_%d\" % i) for i in range({len(values)})]))'"))
    assert read == values
    sh(host, "rm -f /etc/systemd/system/llmhost-values.service /run/llmhost-values.*; systemctl daemon-reload")


def test_vllm_listens_on_loopback_only(host):
    sh(host, "for i in $(seq 60); do ss -ltnH | grep -q ':8000 ' && exit 0; sleep 1; done; exit 1")
    listeners = [ln.split()[3] for ln in sh(host, "ss -ltnH").splitlines()]
    vllm = [a for a in listeners if a.endswith(":8000")]
    assert vllm == ["127.0.0.1:8000"], listeners


def test_secrets_are_root_only_and_never_in_outputs_or_units(host):
    values = []
    for f in ("/etc/llmhost/vllm.secret.env", "/etc/llmhost/open-webui.secret.env"):
        assert sh(host, f"stat -c '%a %U' {f}").strip() == "600 root"
        values += [ln.split("=", 1)[1] for ln in sh(host, f"cat {f}").splitlines() if "=" in ln]
    assert len(values) == 3 and all(len(v) >= 32 for v in values)
    rendered = sh(host, "cat /etc/systemd/system/vllm.service /etc/systemd/system/open-webui.service "
                        "/etc/llmhost/vllm.env /etc/llmhost/open-webui.env; ps -eo args; journalctl --no-pager")
    for v in values:
        assert v not in rendered
        assert not any(v in log for log in RUN_LOGS)


def test_deploy_killed_mid_run_converges(host):
    """Kill the deploy during a change (a new Open WebUI env), re-run: it converges, then a run shows no change."""
    cmd = [sys.executable, "-m", "pyinfra", "-y", "inventories/home.py", "deploy.py", "--data",
           "openwebui_enable_signup=True"]
    for delay in (3, 6):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    p = pyinfra()
    assert p.returncode == 0, p.stdout[-3000:]
    assert totals(pyinfra().stdout)[1] == 0
    assert sh(host, "systemctl is-active vllm open-webui").split() == ["active", "active"]


def test_lost_weight_file_is_fetched_again(host):
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    org, name = st["repo"].split("/")
    blob_dir = f"/var/lib/llmhost/models/hub/models--{org}--{name}/blobs"
    snap = f"/var/lib/llmhost/models/hub/models--{org}--{name}/snapshots/{st['commit']}"
    markers = sh(host, "ls /var/lib/llmhost/models/.complete-*")
    sh(host, f"rm -f $(readlink -f {snap}/model.safetensors)")  # the blob goes; the completion marker stays
    assert sh(host, f"test -e {snap}/model.safetensors || echo gone").strip() == "gone"
    p = pyinfra()
    assert p.returncode == 0, p.stdout[-3000:]
    assert sh(host, f"test -e {snap}/model.safetensors && echo back").strip() == "back"
    # only the lost file moved: less fetched than the snapshot holds, all of it on disk after
    done = re.search(rf"llmhost: weights {st['repo']}: ([\d.]+) (\w+) of ([\d.]+) (\w+) \(100%\) on disk, "
                     r"([\d.]+) (\w+) fetched", p.stdout)
    assert done, p.stdout[-3000:]
    unit = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    assert float(done.group(5)) * unit[done.group(6)] < float(done.group(3)) * unit[done.group(4)]
    assert sh(host, f"ls {blob_dir} | wc -l").strip() != "0"
    assert sh(host, "ls /var/lib/llmhost/models/.complete-*") == markers
    assert totals(pyinfra().stdout)[1] == 0


def test_failed_upgrade_leaves_the_previous_venv_serving(host):
    link, pid = sh(host, "readlink /opt/llmhost/open-webui/current").strip(), main_pid(host, "open-webui")
    p = pyinfra(data={"openwebui_version": "0.12.99"})  # no such release: the install fails
    assert p.returncode != 0
    assert sh(host, "readlink /opt/llmhost/open-webui/current").strip() == link
    assert main_pid(host, "open-webui") == pid
    assert http(f"http://{host['address']}:8080/health")[0] == 200
    assert totals(pyinfra().stdout)[1] == 0


def test_full_disk_during_download_is_a_clear_error_and_never_marked_complete(host):
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    org, name = st["repo"].split("/")
    hub_dir = "/var/lib/llmhost/models/hub"
    sh(host, f"mount -t tmpfs -o size=1m,mode=750 llmhost-full {hub_dir}")
    try:
        p = pyinfra(data={"model_revision": st["commit_big"]})
        assert p.returncode != 0
        assert "no space left on the device" in p.stdout, p.stdout[-3000:]
        assert sh(host, f"ls /var/lib/llmhost/models/.complete-{org}--{name}-{st['commit_big']} 2>/dev/null",
                  check=False).strip() == ""
    finally:
        sh(host, f"umount {hub_dir}")
    assert st["commit"][:12] in sh(host, "cat /etc/systemd/system/vllm.service")  # the unit was not touched
    assert totals(pyinfra().stdout)[1] == 0


def by_name(tmp: Path, **data) -> dict:
    """The test host's inventory with the model named from the catalogue (model: <name>) instead of its hand pin,
    the lock in tmp: the environment that points inventories/home.py at it."""
    hosts = json.loads((REPO / ".cache/testhost/inventory.json").read_text())
    for _, hd in hosts:
        hd.pop("model_repo", None), hd.pop("model_revision", None)
        hd.update(model_lock_file=str(tmp / "llmhost.lock"), **data)
    (tmp / "inventory.json").write_text(json.dumps(hosts))
    return {"LLMHOST_INVENTORY_JSON": str(tmp / "inventory.json")}


def test_switching_models_by_name_locks_fetches_restarts_vllm_once_keeps_chats_and_prunes(host, tmp_path):
    """Issue 20 part 3 and issue 30: a re-run that names a catalogue model (model: qwen3-8b-awq) resolves it on the
    hub, locks its commit, fetches the snapshot and restarts vLLM once with the family's parsers, and Open WebUI once
    for its new default model (DEFAULT_MODELS), its data kept; the same run offline (HF_HUB_OFFLINE=1, the lock and the controller's cache only) changes nothing;
    switching back needs no download (models_keep=2 kept it), then zero changes; models_keep=1 then deletes the
    snapshot that is not serving (huggingface_hub's cache cleaner), never the serving one."""
    st = json.loads((REPO / ".cache/hub/state.json").read_text())
    org, name = st["repo"].split("/")
    marker = "/var/lib/llmhost/models/.complete-{}-{}"
    other, commit = "Qwen/Qwen3-8B-AWQ", st["catalogue"]["qwen3-8b-awq"]
    snap = f"/var/lib/llmhost/models/hub/models--{other.replace('/', '--')}/snapshots/{commit}"
    base = f"http://{host['address']}:8080"
    token = admin_token(base)
    code, chat = http(base + "/api/v1/chats/new", {"chat": {"title": "before the switch", "messages": []}},
                      token=token)
    assert code == 200, chat
    webui_pid, vllm_pid = main_pid(host, "open-webui"), main_pid(host, "vllm")
    starts = "journalctl -u vllm.service -o cat | grep -c '^Started vllm.service' || true"
    started = int(sh(host, starts).strip())
    fetched = sh(host, f"stat -c %Y {marker.format(f'{org}--{name}', st['commit'])}")
    env = by_name(tmp_path, model="qwen3-8b-awq")
    p = pyinfra(env_extra=env)
    assert p.returncode == 0, p.stdout[-3000:]
    assert f"model=qwen3-8b-awq locked to {other}@{commit}" in p.stdout
    assert json.loads((tmp_path / "llmhost.lock").read_text())["models"] == {
        "qwen3-8b-awq": {"repo": other, "commit": commit}}
    assert sh(host, f"ls {marker.format(other.replace('/', '--'), commit)}").strip()
    unit = sh(host, "cat /etc/systemd/system/vllm.service")
    assert f"{other} @ {commit[:12]})" in unit.splitlines()[0], unit.splitlines()[0]
    assert "--tool-call-parser=hermes" in unit and "--reasoning-parser=qwen3" in unit
    assert f"DEFAULT_MODELS={other}" in sh(host, "cat /etc/llmhost/open-webui.env")
    assert main_pid(host, "vllm") != vllm_pid and main_pid(host, "open-webui") != webui_pid
    assert int(sh(host, starts).strip()) == started + 1  # vLLM started once
    webui_pid = main_pid(host, "open-webui")
    offline = pyinfra(env_extra={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and totals(offline.stdout)[1] == 0, offline.stdout[-3000:]
    assert "locked to" not in offline.stdout
    back = pyinfra()  # the test host's own pin again: still there (models_keep=2), so no download
    assert back.returncode == 0, back.stdout[-3000:]
    assert sh(host, f"stat -c %Y {marker.format(f'{org}--{name}', st['commit'])}") == fetched  # not rewritten
    webui_pid = main_pid(host, "open-webui")  # restarted for its default model again
    assert totals(pyinfra().stdout)[1] == 0 and main_pid(host, "open-webui") == webui_pid
    code, chats = http(base + "/api/v1/chats/", token=token)
    assert "before the switch" in [c["title"] for c in chats], chats
    assert sh(host, f"ls -d {snap}").strip()  # models_keep=2: the previous one stays
    p = pyinfra(data={"models_keep": 1})
    assert p.returncode == 0, p.stdout[-3000:]
    assert sh(host, f"ls -d {snap} {marker.format(other.replace('/', '--'), commit)} 2>/dev/null",
              check=False).strip() == ""
    assert sh(host, f"ls /var/lib/llmhost/models/hub/models--{org}--{name}/snapshots/{st['commit']}/config.json"
              ).strip()  # the serving one is kept
    assert totals(pyinfra(data={"models_keep": 1}).stdout)[1] == 0


def test_hf_token_is_stored_root_only_and_never_shown(host):
    token = "hf_llmhostTESTtoken" + os.urandom(8).hex()
    p = pyinfra(env_extra={"HF_TOKEN": token})
    assert p.returncode == 0, p.stdout[-3000:]
    assert sh(host, "stat -c '%a %U' /etc/llmhost/hf-token").strip() == "600 root"
    assert sh(host, "cat /etc/llmhost/hf-token").strip() == token
    again = pyinfra("--dry", "--diff", env_extra={"HF_TOKEN": token})
    assert token not in p.stdout and token not in again.stdout
    assert totals(pyinfra(env_extra={"HF_TOKEN": token}).stdout)[1] == 0


def test_pending_reboot_is_reported_and_nothing_reboots(host):
    started = sh(host, "ps -o lstart= -p 1").strip()
    sh(host, "touch /var/run/reboot-required")
    try:
        p = pyinfra()
        assert p.returncode == 0
        assert "pending reboot (/var/run/reboot-required)" in p.stdout
        assert totals(p.stdout)[1] == 0
        assert sh(host, "ps -o lstart= -p 1").strip() == started
    finally:
        sh(host, "rm -f /var/run/reboot-required")


@pytest.mark.parametrize("unit", ["vllm.service", "open-webui.service"])
def test_unit_exposure_is_at_most_5(host, unit):
    out = sh(host, f"systemd-analyze security --no-pager {unit} | tail -n1")
    level = float(re.search(r"exposure level for \S+: ([\d.]+)", out).group(1))
    print(f"{unit}: {out.strip()}")
    assert level <= 5.0, out


@pytest.mark.parametrize("version", ["0.33.0", "0.26.0", "0.6.3.post1"])
def test_each_era_lock_resolves_on_the_test_host(host, version):
    """vLLM cannot run here (no GPU); each era's pin must resolve with its cut-off, as the deploy's uv does."""
    from operations.core.settings import Settings
    from operations.vllm_service import uv_cutoffs, vllm_requirements

    s = Settings(gpu_card="rtx-3060-12gb", vllm_version=version)
    env = ("https_proxy=$(grep -o 'http://[^\"]*' /etc/apt/apt.conf.d/99llmhost-proxy | head -1) "
           "SSL_CERT_FILE=/usr/local/share/llmhost-ca-bundle.crt UV_CACHE_DIR=/var/cache/llmhost/uv")
    reqs = "\\n".join(vllm_requirements(s))
    out = sh(host, f"printf '{reqs}\\n' | {env} /opt/llmhost/tools/bin/uv pip compile - --no-header --no-annotate "
                   f"--python-version {s.vllm_python_version} --python-platform x86_64-manylinux_2_28 {shell_line(uv_cutoffs(s))}")
    pins = dict(line.split("==", 1) for line in out.split() if "==" in line)
    assert pins["vllm"] == version
    assert pins["torch"] == s.era.torch, out


@pytest.mark.skipif(not os.environ.get("LLMHOST_SLOW"), reason="opt-in (LLMHOST_SLOW=1): installs vLLM for real")
def test_slow_vllm_installs_for_real_and_imports(host):
    """The same uv install the deploy runs for vLLM (pinned, resolved as of its release), then `import vllm`."""
    from operations.core.settings import Settings
    from operations.vllm_service import uv_cutoffs, vllm_requirements

    s = Settings(gpu_card="rtx-3060-12gb", vllm_python="3.11")  # the test host has no 3.12 and no route to fetch one
    cutoffs, reqs = shell_line(uv_cutoffs(s)), " ".join(vllm_requirements(s))  # exactly what the deploy installs
    env = ("https_proxy=$(grep -o 'http://[^\"]*' /etc/apt/apt.conf.d/99llmhost-proxy | head -1) "
           "SSL_CERT_FILE=/usr/local/share/llmhost-ca-bundle.crt UV_CACHE_DIR=/var/cache/llmhost/uv")
    venv = "/var/tmp/vllm-check"  # /tmp is a small tmpfs in the container; the deploy's venvs live on disk
    out = testhost.ssh(host["address"], f"rm -rf {venv} && {env} /opt/llmhost/tools/bin/uv venv -q --python 3.11 "
                       f"{venv} && {env} /opt/llmhost/tools/bin/uv pip install -q --python {venv}/bin/python "
                       f"{cutoffs} {reqs} && {venv}/bin/python -c 'import vllm; print(vllm.__version__)'"
                       f"; rm -rf {venv}", check=False, timeout=3600)
    assert s.vllm_version in out.stdout, out.stdout + out.stderr
