#!/usr/bin/python3
# Managed by llmhost (operations/hostside/fetch_model.py), run by the tools venv's python (huggingface_hub).
# Usage: TOOLS_PYTHON llmhost-fetch-model REPO COMMIT MARKER CACHE_DIR
# Fetches REPO at COMMIT into the Hugging Face cache CACHE_DIR, then writes MARKER (the file list).
# Every progress_s seconds (llmhost-fetch-model.json beside it) it prints the bytes on disk of the snapshot's files
# (the hub's sizes; partial *.incomplete files counted), the rate and the time left; pyinfra shows these lines as
# they come.
# huggingface_hub resumes partial files (*.incomplete) on a re-run; the marker is written only after every
# file is in place, so an interrupted or failed download (full disk) is never taken for a complete snapshot.
import errno
import fnmatch
import json
import os
import sys
import threading
import time

from huggingface_hub import HfApi, snapshot_download

with open(os.path.realpath(__file__) + ".json", encoding="utf-8") as _fh:  # the values the deploy wrote beside it
    CONFIG = json.load(_fh)

ALLOW = CONFIG["allow"]
PROGRESS_S = CONFIG["progress_s"]
repo, commit, marker, cache_dir = sys.argv[1:5]
BLOBS = os.path.join(cache_dir, "models--" + repo.replace("/", "--"), "blobs")


def wanted():
    """{blob name in the cache: size} of the files this fetch takes, from the hub's tree (LFS files are stored by
    their sha256, the others by their blob id)."""
    try:
        tree = list(HfApi().list_repo_tree(repo, revision=commit, recursive=True))
    except Exception:  # the hub gives no sizes: no progress figures, the download itself is unaffected
        return {}
    out = {}
    for f in tree:
        if getattr(f, "size", None) is not None and any(fnmatch.fnmatch(f.path, p) for p in ALLOW):
            lfs = getattr(f, "lfs", None)
            blob = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) or f.blob_id
            if blob:
                out[blob] = f.size
    return out


def on_disk(blobs):
    done = 0
    for blob in blobs:
        for name in (blob, blob + ".incomplete"):
            try:
                done += os.path.getsize(os.path.join(BLOBS, name))
                break
            except OSError:
                pass
    return done


def size(n):
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def human(seconds):
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def progress(blobs, stop, start, t0):
    total = sum(blobs.values()) or 1
    while True:
        stopped = stop.wait(PROGRESS_S)
        done, took = on_disk(blobs), time.monotonic() - t0
        rate = (done - start) / took if took > 0 else 0
        line = f"llmhost: weights {repo}: {size(done)} of {size(total)} ({100 * done / total:.0f}%)"
        if stopped:
            print(f"{line} on disk, {size(done - start)} fetched in {human(took)}", flush=True)
            return
        left = f", about {human((total - done) / rate)} left" if rate > 0 else ""
        print(f"{line}, {rate / 2**20:.1f} MiB/s{left}", flush=True)


blobs = wanted()
stop = threading.Event()
# what was on disk before this download began, read before it begins (not by the reporter once it runs)
reporter = threading.Thread(target=progress, args=(blobs, stop, on_disk(blobs), time.monotonic()), daemon=True)
if blobs:
    reporter.start()
try:
    path = snapshot_download(repo_id=repo, revision=commit, cache_dir=cache_dir, allow_patterns=ALLOW)
except OSError as exc:
    if exc.errno == errno.ENOSPC or "No space left" in str(exc):
        sys.exit(f"llmhost: no space left on the device under {cache_dir} while downloading {repo}: free disk "
                 "space (or move data_root) and re-run; the download resumes and the snapshot is not marked complete")
    raise
stop.set()
if blobs:
    reporter.join()
files = sorted(os.listdir(path))
missing = [f for f in ("config.json", "generation_config.json") if f not in files]
if "config.json" in missing:
    sys.exit(f"{path}: config.json missing after download")
if missing and "modules.json" not in files:  # a sentence-transformers model has no generation config
    print(f"warning: {path} has no generation_config.json: Llama-3-Instruct may not stop on <|eot_id|>")
sizes = {}  # every file of the snapshot, also in subdirectories (a sentence-transformers model has 1_Pooling/)
for root, _dirs, names in os.walk(path):
    for n in names:
        full = os.path.join(root, n)
        sizes[os.path.relpath(full, path)] = os.path.getsize(full)
with open(marker + ".tmp", "w") as fh:
    json.dump({"repo": repo, "commit": commit, "path": path, "files": sizes}, fh, indent=1, sort_keys=True)
os.replace(marker + ".tmp", marker)
print(path)
