"""Real tier, issue 12 part 3: https_domain with Caddy's internal CA on the test host, and a real browser (Debian's
headless Chromium, driven by Playwright) that trusts that CA: sign in, send a chat, the streamed answer appears.
The screenshot is kept in .cache/artifacts/https-chat.png."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ADMIN, REPO, deploy as run_deploy, on_host as sh

pytestmark = pytest.mark.realhost
DOMAIN = "llm.home.arpa"
ARTIFACTS = REPO / ".cache" / "artifacts"


@pytest.fixture(scope="module")
def h(one_host):
    if not shutil.which("chromium") or not shutil.which("certutil"):
        pytest.fail("the HTTPS test needs Debian's chromium and libnss3-tools (make host-deps installs them)")
    return one_host


def deploy(**data):
    return run_deploy(data=data)


def curl(h: dict, ca: str, path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", ca, "--resolve", f"{DOMAIN}:443:{h['address']}",
                           *extra, f"https://{DOMAIN}{path}"], capture_output=True, text=True, timeout=60)


def test_https_in_front_of_open_webui_on_loopback(h, tmp_path_factory):
    assert deploy().returncode == 0
    disk0 = int(sh(h, "df -Pm / | awk 'NR==2 {print $3}'"))
    p = deploy(https_domain=DOMAIN, https_internal_ca=True)
    assert p.returncode == 0, p.stdout[-3000:]
    disk1 = int(sh(h, "df -Pm / | awk 'NR==2 {print $3}'"))
    rss = int(sh(h, "ps -C caddy -o rss= | head -n1")) // 1024
    print(f"https figures: +{disk1 - disk0} MiB disk, caddy {rss} MiB resident")
    assert f"Open WebUI answers at https://{DOMAIN}/" in p.stdout
    listen = sh(h, "ss -ltnH | awk '{print $4}'").split()
    assert "127.0.0.1:8080" in listen and not [a for a in listen if a.endswith(":8080") and "127.0.0.1" not in a]
    assert any(a.endswith(":443") for a in listen)
    env = sh(h, "cat /etc/llmhost/open-webui.env")
    assert f"WEBUI_URL=https://{DOMAIN}" in env and f"CORS_ALLOW_ORIGIN=https://{DOMAIN}" in env
    ca = tmp_path_factory.mktemp("ca") / "root.crt"
    ca.write_text(sh(h, "cat /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"))
    r = curl(h, str(ca), "/health")
    assert r.returncode == 0 and '"status":true' in r.stdout.replace(" ", ""), r.stderr
    r = curl(h, str(ca), "/api/v1/auths/signin", "-H", "Content-Type: application/json", "-d",
             '{"email": "%s", "password": "%s"}' % (ADMIN["email"], ADMIN["password"]))
    assert '"role":"admin"' in r.stdout.replace(" ", ""), r.stdout + r.stderr
    h["ca"] = str(ca)
    again = deploy(https_domain=DOMAIN, https_internal_ca=True)
    import re

    m = re.search(r"Grand total\s+\d+\s+(\S+)", again.stdout)
    assert m and m.group(1) == "-", again.stdout[-3000:]


def test_a_real_browser_signs_in_and_sees_the_streamed_answer(h, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    home = tmp_path_factory.mktemp("browser-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "caddy-local", "-i", h["ca"]],
                   check=True)  # the browser trusts Caddy's internal CA, nothing else is relaxed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "https-chat.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), env={**os.environ, "HOME": str(home)},
                                     args=[f"--host-resolver-rules=MAP {DOMAIN} {h['address']}", "--no-proxy-server"])
        page = browser.new_page()
        try:
            page.goto(f"https://{DOMAIN}/auth", wait_until="networkidle", timeout=90_000)
            page.fill("input[type=email]", ADMIN["email"])
            page.fill("input[type=password]", ADMIN["password"])
            page.keyboard.press("Enter")
            box = page.locator("#chat-input")
            box.wait_for(timeout=60_000)
            page.keyboard.press("Escape")  # a "what's new" dialog, if any
            box.click()
            page.keyboard.type("Which host are you?")
            page.keyboard.press("Enter")
            expect(page.get_by_text("Hello from the llmhost stand-in").first).to_be_visible(timeout=60_000)
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.stat().st_size > 10_000
