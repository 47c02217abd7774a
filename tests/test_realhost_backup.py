"""Real tier, issue 12 part 2: a real Open WebUI upgrade between two releases is preceded by an online backup, and a
failed migration is undone with the one-line restore. Its own disposable test host (tests run in file order)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ADMIN, admin_token, deploy as run_deploy, http, on_host as sh

pytestmark = pytest.mark.realhost
OLD, NEW = "0.11.4", "0.12.4"  # two real Open WebUI releases (NEW is the default pin)
USER = {"name": "Bob", "email": "bob@example.invalid", "password": "bob's long password 42", "role": "user"}
TOOL = "/opt/llmhost/bin/llmhost-webui-backup"


@pytest.fixture(scope="module")
def h(one_host):
    return one_host


def deploy(**data):
    return run_deploy(data=data)


def base(h: dict) -> str:
    return f"http://{h['address']}:8080"


def signin(h: dict, who: dict) -> str:
    code, body = http(base(h) + "/api/v1/auths/signin", {"email": who["email"], "password": who["password"]})
    assert code == 200, body
    return body["token"]


def chat_titles(h: dict, token: str) -> list[str]:
    code, chats = http(base(h) + "/api/v1/chats/", token=token)
    assert code == 200, chats
    return sorted(c["title"] for c in chats)


def backups(h: dict) -> list[str]:
    return sh(h, f"{TOOL} list").split()


def test_older_release_with_users_and_chats(h):
    p = deploy(openwebui_version=OLD)
    assert p.returncode == 0, p.stdout[-3000:]
    assert http(base(h) + "/api/version")[1]["version"] == OLD
    admin = admin_token(base(h))
    code, body = http(base(h) + "/api/v1/auths/add", USER, token=admin)
    assert code == 200, body
    for who, title in ((admin, "admin's chat before the upgrade"), (signin(h, USER), "bob's chat before the upgrade")):
        code, body = http(base(h) + "/api/v1/chats/new", {"chat": {"title": title, "messages": []}}, token=who)
        assert code == 200 and body["id"], body
    assert backups(h) == []  # a first install has nothing to back up


def test_upgrade_takes_an_online_backup_first_and_keeps_the_chats(h):
    old_venv = sh(h, "readlink /opt/llmhost/open-webui/current").strip()
    t0 = time.monotonic()
    p = deploy()  # the default pin: NEW
    print(f"upgrade {OLD} -> {NEW} with the deploy: {time.monotonic() - t0:.1f} s")
    assert p.returncode == 0, p.stdout[-3000:]
    assert http(base(h) + "/api/version")[1]["version"] == NEW
    [name] = backups(h)
    assert name.endswith(f"-before-{NEW}")
    meta = sh(h, f"cat /var/lib/llmhost/backups/{name}/meta.json")
    assert old_venv in meta
    print("backup:", sh(h, f"du -sh /var/lib/llmhost/backups/{name}").strip(), meta)
    assert sh(h, "stat -c '%U %a' /var/lib/llmhost/backups").strip() == "llmhost-webui 700"
    assert chat_titles(h, signin(h, ADMIN)) == ["admin's chat before the upgrade"]
    assert chat_titles(h, signin(h, USER)) == ["bob's chat before the upgrade"]
    # The backup is a database of its own that holds the chats (sqlite3's integrity check on the copy).
    check = sh(h, f"python3 -c \"import sqlite3; c = sqlite3.connect('/var/lib/llmhost/backups/{name}/webui.db'); "
                  "print(c.execute('pragma integrity_check').fetchone()[0], c.execute('select count(*) from chat')"
                  ".fetchone()[0])\"")
    assert check.split() == ["ok", "2"]


def test_timer_backup_runs_under_its_hardened_unit_and_rerun_changes_nothing(h):
    assert sh(h, "systemctl is-enabled llmhost-webui-backup.timer").strip() == "enabled"
    assert sh(h, "systemctl is-active llmhost-webui-backup.timer").strip() == "active"
    t0 = time.monotonic()
    sh(h, "systemctl start llmhost-webui-backup.service")  # oneshot: returns when done
    print(f"timer backup (online, Open WebUI running): {time.monotonic() - t0:.1f} s")
    assert [n for n in backups(h) if n.endswith("-timer")]
    p = deploy()
    assert p.returncode == 0, p.stdout[-3000:]
    assert "Back up Open WebUI's data before its venv changes" in p.stdout
    import re

    m = re.search(r"Grand total\s+\d+\s+(\S+)", p.stdout)
    assert m and m.group(1) == "-", p.stdout[-3000:]  # no upgrade: no backup, zero changes


def test_failed_migration_is_undone_by_the_one_line_restore(h):
    name = next(n for n in backups(h) if n.endswith(f"-before-{NEW}"))
    # A migration that failed half-way: the database is unusable and Open WebUI cannot serve it.
    sh(h, "systemctl stop open-webui && echo 'half-migrated' > /var/lib/llmhost/open-webui/webui.db")
    t0 = time.monotonic()
    out = sh(h, f"{TOOL} restore {name}")  # the README's one line
    print(f"restore (stop, back up the broken state, restore, start): {time.monotonic() - t0:.1f} s")
    assert f"restored {name}" in out
    assert http(base(h) + "/api/version")[1]["version"] == OLD
    assert chat_titles(h, signin(h, ADMIN)) == ["admin's chat before the upgrade"]
    assert chat_titles(h, signin(h, USER)) == ["bob's chat before the upgrade"]
    broken = [n for n in backups(h) if n.endswith("-before-restore")]
    assert broken and "half-migrated" in sh(h, f"cat /var/lib/llmhost/backups/{broken[0]}/webui.db")  # kept too
