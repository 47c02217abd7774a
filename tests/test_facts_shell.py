"""Custom facts whose commands can run here as they run on a host: executed for real against files made here."""

import json
import subprocess

from operations.facts import SnapshotFiles


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
