"""Custom facts whose commands can run here as they run on a host: executed for real against files made here."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from operations.facts import SnapshotFiles
from tests.conftest import host_program


def snapshot_state(tmp_path, files: dict[str, int], on_disk: dict[str, int] | None, marker: bool = True) -> str:
    snap = tmp_path / "snap"
    snap.mkdir()
    for name, size in (on_disk or {}).items():
        (snap / name).write_bytes(b"x" * size)
    path = tmp_path / ".complete-org--m-0123"
    if marker:
        path.write_text(json.dumps({"repo": "org/m", "commit": "0123", "path": str(snap), "files": files}))
    out = subprocess.run(["sh", "-c", SnapshotFiles().command(str(path))], capture_output=True, text=True).stdout
    return SnapshotFiles().process(out.splitlines())


def test_snapshot_complete_only_when_every_listed_file_has_its_size(tmp_path):
    files = {"config.json": 10, "model.safetensors": 100}
    (tmp_path / "a").mkdir()
    assert snapshot_state(tmp_path / "a", files, files) == "complete"
    (tmp_path / "b").mkdir()
    assert snapshot_state(tmp_path / "b", files, {"config.json": 10}) == "missing model.safetensors"
    (tmp_path / "c").mkdir()
    assert snapshot_state(tmp_path / "c", files, {"config.json": 10, "model.safetensors": 50}) == \
        "missing model.safetensors"  # truncated
    (tmp_path / "d").mkdir()
    assert snapshot_state(tmp_path / "d", files, files, marker=False) == "absent"


def test_snapshot_broken_symlink_counts_as_missing(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model.safetensors").symlink_to(tmp_path / "blobs" / "gone")
    marker = tmp_path / "m"
    marker.write_text(json.dumps({"path": str(snap), "files": {"model.safetensors": 4}}))
    out = subprocess.run(["sh", "-c", SnapshotFiles().command(str(marker))], capture_output=True, text=True).stdout
    assert SnapshotFiles().process(out.splitlines()) == "missing model.safetensors"


def test_secret_commands_make_root_only_files_and_share_the_vllm_key(tmp_path):
    """The commands the two secret operations yield, run for real here (with the facts they read also run here):
    0600 files, a key per file, Open WebUI's OPENAI_API_KEY equal to vLLM's, a second run keeps both values, and a
    changed API key (a box that became a fleet's UI host) rewrites only OPENAI_API_KEY."""
    import os
    import stat

    from pyinfra_testing.util import FakeState, create_host
    from pyinfra.context import ctx_host, ctx_state

    from operations.openwebui_service import EnvValuesMatch, session_secret
    from operations.shared_ops import generated_secret

    vllm, webui = tmp_path / "vllm.secret.env", tmp_path / "open-webui.secret.env"

    def commands(op, **kw):
        files = {f"path={p}": ({"mode": 600} if p.exists() else None) for p in (vllm, webui)}
        match_cmd = EnvValuesMatch().command(str(webui), "OPENAI_API_KEY", str(vllm), "VLLM_API_KEY")
        match = EnvValuesMatch().process(subprocess.run(["sh", "-c", match_cmd], capture_output=True,
                                                        text=True).stdout.splitlines())
        key = f"path_a={webui}, path_b={vllm}, var_a=OPENAI_API_KEY, var_b=VLLM_API_KEY"
        state = FakeState()
        host = create_host(state, facts={"files.File": files, "openwebui_service.EnvValuesMatch": {key: match}})
        with ctx_state.use(state), ctx_host.use(host):
            return [str(c) for c in op._inner(**kw)]

    def run_both():
        for cmd in (commands(generated_secret, path=str(vllm), variable="VLLM_API_KEY")
                    + commands(session_secret, config_root=str(tmp_path), key_file=str(vllm), key_var="VLLM_API_KEY")):
            subprocess.run(["sh", "-c", cmd], check=True)
        return vllm.read_text(), webui.read_text()

    first = run_both()
    assert run_both() == first  # never rotated
    v, w = first
    key = v.strip().removeprefix("VLLM_API_KEY=")
    assert len(key) >= 40 and f"OPENAI_API_KEY={key}\n" in w and w.startswith("WEBUI_SECRET_KEY=")
    for f in (vllm, webui):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    vllm.write_text("VLLM_API_KEY=the-fleet-key\n")
    _, w2 = run_both()
    assert w2.splitlines()[0] == w.splitlines()[0]  # WEBUI_SECRET_KEY kept (sessions survive)
    assert "OPENAI_API_KEY=the-fleet-key" in w2.splitlines() and key not in w2
    assert stat.S_IMODE(os.stat(webui).st_mode) == 0o600


def test_ssh_socket_gets_tcp_nodelay_and_other_connectors_are_left_alone():
    """preflight.no_nagle: the SSH transport's TCP socket gets TCP_NODELAY (the 4 s no-op needs it, see
    test_realhost.test_second_apply_reports_zero_changes_within_4s); @local/@fake connectors have no socket."""
    import socket
    from types import SimpleNamespace

    from operations.preflight import no_nagle

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        connector = SimpleNamespace(client=SimpleNamespace(get_transport=lambda: SimpleNamespace(sock=client)))
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # the kernel's default: Nagle on
        assert no_nagle(connector) is True
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()
        server.close()
    assert no_nagle(SimpleNamespace()) is False  # @fake / @local
    assert no_nagle(SimpleNamespace(client=SimpleNamespace(get_transport=lambda: None))) is False  # not connected


def test_env_values_are_compared_on_the_host_and_only_a_word_comes_back(tmp_path):
    from operations.openwebui_service import EnvValuesMatch

    a, b = tmp_path / "open-webui.secret.env", tmp_path / "router.secret.env"

    def state():
        cmd = EnvValuesMatch().command(str(a), "OPENAI_API_KEY", str(b), "LITELLM_MASTER_KEY")
        out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout
        assert "sk-" not in out  # the values never leave the host
        return EnvValuesMatch().process(out.splitlines())

    assert state() == "missing"
    a.write_text("WEBUI_SECRET_KEY=w\nOPENAI_API_KEY=sk-one\n")
    assert state() == "missing"
    b.write_text("LITELLM_MASTER_KEY=sk-one\n")
    assert state() == "match"
    b.write_text("LITELLM_MASTER_KEY=sk-two\n")
    assert state() == "differ"


def test_the_fetchers_marker_lists_files_in_subdirectories_and_the_check_accepts_them(tmp_path):
    """A sentence-transformers snapshot has 1_Pooling/config.json: the marker must list it as a file (not the
    directory), or every run would fetch the embedding model again."""
    import os
    import sys

    from operations.hub import FETCH_PATTERNS
    from operations.render import render

    snap = tmp_path / "snapshot"
    (snap / "1_Pooling").mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "modules.json").write_text("[]")
    (snap / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 32}')
    fake_hub = tmp_path / "huggingface_hub"
    fake_hub.mkdir()  # stands in for huggingface_hub.snapshot_download: the snapshot is already here
    (fake_hub / "__init__.py").write_text(f"class HfApi:\n    pass  # no sizes: no progress lines\n\n"
                                          f"def snapshot_download(**kw):\n    return {str(snap)!r}\n")
    fetcher = host_program(tmp_path, "fetch_model", dict(progress_s=30, allow=FETCH_PATTERNS), "fetch")
    marker = tmp_path / ".complete-x"
    subprocess.run([sys.executable, str(fetcher), "org/m", "0" * 40, str(marker), str(tmp_path / "cache")],
                   check=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    listed = json.loads(marker.read_text())["files"]
    assert listed == {"1_Pooling/config.json": 32, "config.json": 2, "modules.json": 2}
    out = subprocess.run(["sh", "-c", SnapshotFiles().command(str(marker))], capture_output=True, text=True).stdout
    assert SnapshotFiles().process(out.splitlines()) == "complete"


def test_model_snapshots_reads_each_complete_marker_and_skips_broken_ones(tmp_path):
    """ModelSnapshots' command run for real: a marker per complete snapshot (the fetcher's format), the bytes of its
    files summed; an unreadable marker and other files are ignored."""
    import json

    from operations.context import snapshots_to_prune
    from operations.facts import ModelSnapshots

    for commit, files in (("a" * 40, {"config.json": 10, "model.safetensors": 1000}), ("b" * 40, {"config.json": 7})):
        (tmp_path / f".complete-org--m-{commit}").write_text(json.dumps(
            {"repo": "org/m", "commit": commit, "path": "/x", "files": files}))
    (tmp_path / ".complete-org--m-broken").write_text("{not json")
    (tmp_path / "hub").mkdir()
    out = subprocess.run(["sh", "-c", ModelSnapshots().command(str(tmp_path))], capture_output=True, text=True)
    got = ModelSnapshots().process(out.stdout.splitlines())
    assert sorted((d["commit"][0], d["bytes"]) for d in got) == [("a", 1010), ("b", 7)]
    assert ModelSnapshots().process(subprocess.run(["sh", "-c", ModelSnapshots().command(str(tmp_path / "none"))],
                                                   capture_output=True, text=True).stdout.splitlines()) == []
    # serving b, keep 1: a goes; keep 2: nothing goes; the serving one never goes
    assert [d["commit"][0] for d in snapshots_to_prune(got, 1, ("org/m", "b" * 40))] == ["a"]
    assert snapshots_to_prune(got, 2, ("org/m", "b" * 40)) == []
    assert [d["commit"][0] for d in snapshots_to_prune(got, 1, ("org/m", "c" * 40))] == ["a", "b"]


def held_against_recorded_smi(tmp_path, gpu: list[str], apps: list[str], pids: str = "") -> dict:
    """GpuMemoryHeld's command run here against an nvidia-smi that prints these recorded lines for its queries."""
    from operations.facts import GpuMemoryHeld

    for name, text in (("gpu", "".join(g + "\n" for g in gpu)), ("apps", "".join(a + "\n" for a in apps)),
                       ("pids", pids)):
        (tmp_path / f"{name}.txt").write_text(text)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$*\" in\n"
                   f"*--query-gpu=index,memory.total,memory.used*) cat {tmp_path}/gpu.txt;;\n"
                   f"*--query-compute-apps=pid,process_name,used_memory*) cat {tmp_path}/apps.txt;;\n"
                   f"*'-q -d PIDS'*) cat {tmp_path}/pids.txt;;\n"
                   "esac\n")
    smi.chmod(0o755)
    out = subprocess.run(["sh", "-c", GpuMemoryHeld().command()], capture_output=True, text=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    return GpuMemoryHeld().process(out.splitlines())


def test_gpu_memory_held_runs_nvidia_smi_as_recorded(tmp_path):
    """The fact's command against an nvidia-smi that prints what the GPU host's printed for these queries
    (tests/fixtures/gpu-host/smi-memory/smi-other-process.txt): the memory.used of the GPU, the compute app."""
    from pathlib import Path

    rec = (Path(__file__).parent / "fixtures/gpu-host/smi-memory/smi-other-process.txt").read_text().splitlines()
    gpu, app = rec[1].split(", "), rec[3].split(", ")
    assert held_against_recorded_smi(tmp_path, [f"{gpu[0]}, {gpu[2]}, {gpu[3]}"], [f"{app[1]}, {app[2]}, {app[3]}"]) == {
        "used_mib": 3691, "own_mib": 0, "others_mib": 3691, "apps": [{"pid": 435, "name": "python3", "mib": 3682}]}


def test_the_fetcher_prints_bytes_total_rate_and_time_left_while_it_downloads(tmp_path):
    """Rendered with a 0.2 s period (30 s in the deploy). huggingface_hub stands in (named): list_repo_tree gives the
    hub's sizes (an LFS file by sha256, a small one by blob id), snapshot_download writes the blobs as the real one
    lays them out (blobs/<id>.incomplete, then blobs/<id>). The real one, against olah, is in test_realhost.py."""
    import os
    import re
    import sys

    from operations.hub import FETCH_PATTERNS
    from operations.render import render

    fake_hub = tmp_path / "huggingface_hub"
    fake_hub.mkdir()
    (fake_hub / "__init__.py").write_text('''
import os, time
from types import SimpleNamespace as NS

class HfApi:
    def list_repo_tree(self, repo, revision, recursive):  # RepoFile's fields
        return [NS(path="model.safetensors", size=4 * 2**20, lfs={"sha256": "ab" * 32}, blob_id="x"),
                NS(path="config.json", size=2, lfs=None, blob_id="c0ffee"),
                NS(path="README.md", size=9999, lfs=None, blob_id="readme"), NS(path="sub")]  # sub: a folder

def snapshot_download(repo_id, revision, cache_dir, allow_patterns):
    blobs = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"), "blobs")
    snap = os.path.join(cache_dir, "snap")
    os.makedirs(blobs); os.makedirs(snap)
    with open(os.path.join(blobs, "c0ffee"), "w") as f:
        f.write("{}")
    part = os.path.join(blobs, "ab" * 32 + ".incomplete")
    for _ in range(8):  # a chunk, then wait for the fetcher's next line (an event, not a time)
        with open(part, "ab") as f:
            f.write(b"0" * 2**19)
        seen = open(os.environ["FETCHER_OUT"]).read().count("llmhost: weights")
        while open(os.environ["FETCHER_OUT"]).read().count("llmhost: weights") == seen:
            time.sleep(0.02)
    os.rename(part, part[:-len(".incomplete")])
    with open(os.path.join(snap, "config.json"), "w") as f:
        f.write("{}")
    return snap
''')
    fetcher = host_program(tmp_path, "fetch_model", dict(progress_s=0.2, allow=FETCH_PATTERNS), "fetch")
    out = tmp_path / "fetcher.out"
    with open(out, "w") as fh:
        subprocess.run([sys.executable, str(fetcher), "org/m", "0" * 40, str(tmp_path / ".complete"),
                        str(tmp_path / "cache")], stdout=fh, check=True, timeout=300,  # a hang guard only
                       env={**os.environ, "PYTHONPATH": str(tmp_path), "FETCHER_OUT": str(out)})
    stdout = out.read_text()
    lines = [l for l in stdout.splitlines() if l.startswith("llmhost: weights org/m: ")]
    during = [l for l in lines if "left" in l]
    assert len(during) >= 8, stdout  # a line after every chunk: bytes, total, rate, time left
    assert re.fullmatch(r"llmhost: weights org/m: [\d.]+ (KiB|MiB) of 4\.0 MiB \(\d+%\), [\d.]+ MiB/s, about \d+ s left",
                        during[0]), during[0]
    # the last line: every byte of the hub's sizes on disk (README.md is not fetched, so not counted)
    assert lines[-1].startswith("llmhost: weights org/m: 4.0 MiB of 4.0 MiB (100%) on disk, 4.0 MiB fetched in ")


def test_the_venv_monitor_prints_what_the_cache_grew_and_keeps_the_exit_status(tmp_path, monkeypatch):
    from operations import shared_ops

    monkeypatch.setattr(shared_ops, "PROGRESS_S", 1)
    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "out"
    # the "install" writes 3 MiB into the cache, waits for the monitor's line about it (an event, not a time), fails
    cmd = shared_ops.with_progress(f"head -c 3145728 /dev/zero > {cache}/w && until grep -q '3 MiB downloaded' {out}; "
                                   "do sleep 0.1; done; exit 3", "venv /opt/x", str(cache))
    with open(out, "w") as fh:
        p = subprocess.run(["sh", "-c", cmd], stdout=fh, timeout=300)  # a hang guard only
    assert p.returncode == 3
    lines = out.read_text().splitlines()
    assert lines and all(re.fullmatch(r"llmhost: venv /opt/x: \d+ MiB downloaded in \d+ s, \d+ MiB/s", l)
                         for l in lines), lines
    assert lines[-1].startswith("llmhost: venv /opt/x: 3 MiB downloaded")


@pytest.mark.parametrize("rec, expect", [
    # an OpenGL client holding 775 MiB of textures (tools/gpu_graphics_memory.py): memory.used counts it,
    # --query-compute-apps does not list it
    ("smi-graphics", {"used_mib": 785, "own_mib": 0, "others_mib": 785,
                      "apps": [{"pid": 491, "name": "python3", "mib": 775}]}),
    # a CUDA process (1542 MiB) and an OpenGL client (519 MiB) at once
    ("smi-compute-and-graphics", {"used_mib": 2080, "own_mib": 0, "others_mib": 2080,
                                  "apps": [{"pid": 583, "name": "python3", "mib": 1542},
                                           {"pid": 618, "name": "python3", "mib": 519}]}),
])
def test_gpu_memory_held_names_graphics_processes_as_recorded(tmp_path, rec, expect):
    """Issue 20: a desktop's display server, compositor and browser are graphics processes. The fact's command
    against an nvidia-smi that prints what the GPU host printed for each of its three queries while a real OpenGL
    client of the NVIDIA driver held textures (tests/fixtures/gpu-host/smi-memory/<rec>-*.txt)."""
    from pathlib import Path

    d = Path(__file__).parent / "fixtures/gpu-host/smi-memory"
    fact = (d / f"{rec}-fact.txt").read_text().splitlines()[1:]  # what the fact's command printed there
    pids = "\n".join((d / f"{rec}-pids.txt").read_text().splitlines()[1:]) + "\n"
    assert held_against_recorded_smi(tmp_path, [l.removeprefix("gpu ") for l in fact if l.startswith("gpu ")],
                                     [l.removeprefix("app ") for l in fact if l.startswith("app ")], pids) == expect


def test_a_failed_download_never_writes_the_completion_marker(tmp_path):
    """Issue 27. Breakage: the marker written before the download (a failed fetch then taken for a complete
    snapshot). The fetcher program, with huggingface_hub's download standing in as one that fails (a full disk)."""
    import os
    import sys

    from operations.hub import FETCH_PATTERNS

    fake_hub = tmp_path / "huggingface_hub"
    fake_hub.mkdir()
    (fake_hub / "__init__.py").write_text("import errno\n\nclass HfApi:\n    pass\n\n"
                                          "def snapshot_download(**kw):\n"
                                          "    raise OSError(errno.ENOSPC, 'No space left on device')\n")
    fetcher = host_program(tmp_path, "fetch_model", dict(progress_s=30, allow=FETCH_PATTERNS), "fetch")
    marker = tmp_path / ".complete-x"
    p = subprocess.run([sys.executable, str(fetcher), "org/m", "0" * 40, str(marker), str(tmp_path / "cache")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert p.returncode != 0 and not marker.exists(), p.stdout + p.stderr


def test_the_route_toward_rank_0_is_the_interface_holding_its_address_else_the_routes_with_the_source_address():
    """vllm_service.RouteToward, run by sh on this machine: its own address -> the interface holding it and that
    address (lo, 127.0.0.1), another -> the route's device and source address (this machine's default route), never
    an '@ifN' suffix; a value that is not one address finds nothing and runs nothing."""
    from operations.vllm_service import RouteToward

    def ask(address: str) -> dict:
        out = subprocess.run(["sh", "-c", RouteToward().command(address)], capture_output=True, text=True).stdout
        return RouteToward().process(out.splitlines())

    assert ask("127.0.0.1") == {"interface": "lo", "address": "127.0.0.1"}
    route = subprocess.run(["ip", "-o", "route", "get", "192.0.2.77"], capture_output=True, text=True).stdout.split()
    assert ask("192.0.2.77") == {"interface": route[route.index("dev") + 1], "address": route[route.index("src") + 1]}
    assert re.fullmatch(r"[\w.-]+", ask("192.0.2.77")["interface"])
    assert ask("10.1.2.3; touch /tmp/llmhost-injected") == {} and not Path("/tmp/llmhost-injected").exists()
