#!/usr/bin/python3
# Managed by llmhost: Open WebUI's backups (operations/hostside/webui_backup.py; its values in
# llmhost-webui-backup.json beside it).
"""Back up / restore Open WebUI's data.

    llmhost-webui-backup backup [--reason WORD]   # online SQLite backup (the backup API) of webui.db + uploads
    llmhost-webui-backup list
    llmhost-webui-backup restore NAME             # as root: stop, back up what is there now, restore, start

A backup is a directory BACKUPS/<UTC time>-<reason>/ holding webui.db, uploads.tar and meta.json (the Open WebUI
venv it was taken under). It gets its final name only when complete. Only the oldest complete backups beyond the
newest KEEP are ever deleted; nothing else under the data root is.
"""

import datetime
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile

with open(os.path.realpath(__file__) + ".json", encoding="utf-8") as _fh:  # the values the deploy wrote beside it
    CONFIG = json.load(_fh)

DATA = CONFIG["data_root"] + "/open-webui"
DB = DATA + "/webui.db"
BACKUPS = CONFIG["backups"]
KEEP = CONFIG["keep"]
CURRENT = CONFIG["venv_root"] + "/current"
NAME = re.compile(r"^\d{8}T\d{6}Z-[a-z0-9.-]+$")


def complete() -> list:
    names = [n for n in os.listdir(BACKUPS) if NAME.match(n) and os.path.isfile(f"{BACKUPS}/{n}/meta.json")]
    return sorted(names, key=lambda n: (n[:16], os.stat(f"{BACKUPS}/{n}/meta.json").st_mtime_ns))  # oldest first


def sqlite_copy(src: str, dst: str) -> None:
    """SQLite's online backup API: a consistent copy even while Open WebUI writes (never a file copy)."""
    s, d = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


def backup(reason: str) -> str:
    if not os.path.exists(DB):
        print(f"nothing to back up: {DB} does not exist")
        return ""
    os.umask(0o077)
    name = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + reason
    while os.path.exists(f"{BACKUPS}/{name}"):
        name += "-1"
    tmp = f"{BACKUPS}/.partial-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        sqlite_copy(DB, f"{tmp}/webui.db")
        kind = "sqlite-backup-api"
    except sqlite3.DatabaseError:  # not a database any more (e.g. a failed migration): keep its bytes as they are
        shutil.copyfile(DB, f"{tmp}/webui.db")
        kind = "file-copy-of-a-broken-database"
    with tarfile.open(f"{tmp}/uploads.tar", "w") as tar:
        if os.path.isdir(f"{DATA}/uploads"):
            tar.add(f"{DATA}/uploads", arcname="uploads")
    venv = os.path.realpath(CURRENT) if os.path.islink(CURRENT) else ""
    with open(f"{tmp}/meta.json", "w") as f:
        json.dump({"name": name, "reason": reason, "venv": venv, "db": kind,
                   "db_bytes": os.path.getsize(f"{tmp}/webui.db")}, f)
    os.rename(tmp, f"{BACKUPS}/{name}")
    for old in complete()[:-KEEP]:  # retention: only complete backups, oldest first
        shutil.rmtree(f"{BACKUPS}/{old}")
    print(f"{BACKUPS}/{name}")
    return name


def restore(name: str) -> None:
    if os.geteuid() != 0:
        sys.exit("restore runs as root (it stops and starts open-webui.service)")
    if name not in complete():
        sys.exit(f"no complete backup {name!r} in {BACKUPS} (see: llmhost-webui-backup list)")
    meta = json.load(open(f"{BACKUPS}/{name}/meta.json"))
    subprocess.run(["systemctl", "stop", "open-webui.service"], check=True)
    subprocess.run(["runuser", "-u", "llmhost-webui", "--", sys.argv[0], "backup", "--reason", "before-restore"],
                   check=True)  # what is there now is kept too
    for suffix in ("", "-wal", "-shm", "-journal"):  # all saved in the before-restore backup just taken
        if os.path.exists(DB + suffix):
            os.remove(DB + suffix)
    sqlite_copy(f"{BACKUPS}/{name}/webui.db", DB)
    if os.path.isdir(f"{DATA}/uploads"):
        shutil.rmtree(f"{DATA}/uploads")  # saved in the before-restore backup
    with tarfile.open(f"{BACKUPS}/{name}/uploads.tar") as tar:
        tar.extractall(DATA, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    os.makedirs(f"{DATA}/uploads", exist_ok=True)
    subprocess.run(["chown", "-R", "llmhost-webui:llmhost-webui", DB, f"{DATA}/uploads"], check=True)
    if meta["venv"] and os.path.isdir(meta["venv"]):
        os.symlink(meta["venv"], CURRENT + ".new")
        os.replace(CURRENT + ".new", CURRENT)
        print(f"Open WebUI venv back to {meta['venv']}: pin openwebui_version to that version before the next deploy")
    subprocess.run(["systemctl", "start", "open-webui.service"], check=True)
    print(f"restored {name}")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["backup"]:
        reason = args[args.index("--reason") + 1] if "--reason" in args else "manual"
        backup(re.sub(r"[^a-z0-9.-]", "-", reason.lower()))
    elif args[:1] == ["list"]:
        print("\n".join(complete()))
    elif args[:1] == ["restore"] and len(args) == 2:
        restore(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
