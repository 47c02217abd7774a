"""apt behind the user's proxy and CA (http_proxy / ca_bundle): the same route uv, pip, curl and the Hub take.

uv, pip, huggingface_hub and the CUDA runfile's curl get them from Context.download_env; apt reads only its own
configuration, so it gets Acquire::http(s)::Proxy, and the CA joins the system store that apt and curl trust."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, server

from operations.context import Context
from operations.shared_ops import skipped

APT_PROXY = "/etc/apt/apt.conf.d/95llmhost-proxy"
CA_DEST = "/usr/local/share/ca-certificates/llmhost-proxy-ca.crt"


def apt_proxy_conf(proxy: str) -> str:
    return f'// llmhost: http_proxy\nAcquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n'


@deploy("Downloads through the proxy")
def ensure(ctx: Context):
    s = ctx.s
    if not s.http_proxy and not s.ca_bundle:
        skipped(name="Proxy and CA (skipped: none set)", reason="http_proxy and ca_bundle are unset: direct downloads")
        return
    if s.http_proxy:
        files.put(create_remote_dir=False, name="apt through http_proxy", src=StringIO(apt_proxy_conf(s.http_proxy)), dest=APT_PROXY,
                  mode="644")
    if s.ca_bundle:
        ca = files.link(name="ca_bundle in the system store (apt, curl)", path=CA_DEST, target=s.ca_bundle)
        server.shell(name="update-ca-certificates", commands=["update-ca-certificates"], _if=ca.did_change)
