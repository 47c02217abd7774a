"""HTTPS in front of Open WebUI (opt-in, ``https_domain``): Caddy, the distribution's package where the release has
one (Debian 12, Ubuntu 24.04) and Caddy's own signed apt repository elsewhere (Ubuntu 22.04). A public name gets an
automatic certificate; ``https_internal_ca`` uses Caddy's own CA on a LAN. Open WebUI binds to loopback then (see
settings), knows its public URL (WEBUI_URL) and allows only that origin (CORS); websockets and streamed answers pass
through Caddy's reverse_proxy as they are."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd
from pyinfra.operations.util import any_changed

from operations.context import Context
from operations.render import rendered
from operations.shared_ops import skipped

CADDY_KEYRING = "/usr/share/keyrings/caddy-stable-archive-keyring.gpg"
CADDY_REPO = "https://dl.cloudsmith.io/public/caddy/stable"
CADDY_ROOT_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"


def caddyfile_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(domain=s.https_domain, email=s.https_email, internal=s.https_internal_ca, port=s.openwebui_port)


@deploy("HTTPS (Caddy)")
def ensure(ctx: Context):
    s = ctx.s
    if not s.https_domain or not ctx.serves_webui:
        skipped(name="HTTPS (skipped: no https_domain)", reason="https_domain is unset (or no Open WebUI here)")
        return
    if ctx.os_id == "ubuntu" and ctx.os_version == "22.04":  # no caddy package in 22.04: Caddy's signed repository
        key = apt.key(name="Caddy's signing key", src=f"{CADDY_REPO}/gpg.key", dest=CADDY_KEYRING,
                      _env=ctx.download_env)
        repo = apt.sources_file(name="Caddy's apt repository", filename="caddy-stable", types="deb",
                                uris=f"{CADDY_REPO}/deb/debian", suites="any-version", components=["main"],
                                signed_by=CADDY_KEYRING)
        apt.update(name="Refresh apt after adding Caddy's repository", _if=any_changed(key, repo),
                   _env=ctx.download_env)
    apt.packages(name="Caddy", packages=["caddy"], no_recommends=True, update=True, cache_time=86400,
                 _env=ctx.download_env)
    conf = files.put(create_remote_dir=False, name=f"Caddyfile: https://{s.https_domain} -> Open WebUI on loopback",
                     src=rendered("Caddyfile.j2", **caddyfile_vars(ctx)),
                     dest="/etc/caddy/Caddyfile", mode="644")
    systemd.service(name="Caddy reloaded (only when the Caddyfile changed)", service="caddy.service", running=True,
                    reloaded=True, _if=conf.did_change)
    systemd.service(name="Caddy running and enabled", service="caddy.service", running=True, enabled=True)
