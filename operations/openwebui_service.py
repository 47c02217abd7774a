"""Open WebUI under systemd: its own user and venv, data under data_root (never touched by upgrades), the vLLM
backend through OPENAI_API_BASE_URL, offline settings, auth on and signup limited to the first admin. Its data is
backed up (SQLite's online backup API + uploads, into data_root/backups) before every change of its venv and by a
timer; ``llmhost-webui-backup restore NAME`` puts one back."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.files import File, Link
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from operations import python_venv
from operations.context import Context, completion_marker, hf_snapshot
from operations.core import boundary
from operations.render import rendered
from operations.facts import first_line
from operations.shared_ops import (NEW_SECRET, fetch_command, generated_secret, host_program, secret_file, skipped,
                                   snapshot)

START_TIMEOUT = 600


class EnvValuesMatch(FactBase):
    """Whether two env files on the host hold the same value for their variables, compared on the host so that no
    value leaves it: ``match``, ``differ`` (both set, different) or ``missing`` (either file or variable absent).

    Sample output::

        differ
    """

    @staticmethod
    def default():
        return "missing"

    def command(self, path_a: str, var_a: str, path_b: str, var_b: str) -> str:
        path_a, path_b = boundary.shell_word(path_a), boundary.shell_word(path_b)
        return (f"a=$(sed -n 's/^{var_a}=//p' {path_a} 2>/dev/null); b=$(sed -n 's/^{var_b}=//p' {path_b} 2>/dev/null); "
                "if [ -z \"$a\" ] || [ -z \"$b\" ]; then echo missing; elif [ \"$a\" = \"$b\" ]; then echo match; "
                "else echo differ; fi")

    def process(self, output):
        return first_line(output) or "missing"


class Result(NamedTuple):
    changes: list  # the operations whose change means Open WebUI restarted (verify waits for it then)
    admin: Any  # the admin password operation (verify shows a generated one once), or None




@operation()
def session_secret(config_root: str, key_file: str, key_var: str):
    """Generate Open WebUI's WEBUI_SECRET_KEY once, on the host, into a root-only env file, with the key of the API
    it talks to (OPENAI_API_KEY) copied from that API's own root-only file on the host; when that key changed (a
    box that became a fleet's UI host) only OPENAI_API_KEY is rewritten. No value leaves the host.

    + config_root: where ``open-webui.secret.env`` lives (0600 root)
    + key_file: the API's root-only env file (vLLM's, or the router's)
    + key_var: the variable holding the key there (VLLM_API_KEY, LITELLM_MASTER_KEY)"""
    path = f"{config_root}/open-webui.secret.env"
    state = host.get_fact(EnvValuesMatch, path_a=path, var_a="OPENAI_API_KEY", path_b=key_file, var_b=key_var)
    path, key_file = boundary.shell_word(path), boundary.shell_word(key_file)  # words of the lines below
    if state == "match":
        host.noop("Open WebUI session secret exists (root-only, kept) and holds the API's current key")
        return
    read = f"k=$(sed -n 's/^{key_var}=//p' {key_file}) && [ -n \"$k\" ]"
    if state == "differ":
        yield (f"umask 077 && {read} && sed -i '/^OPENAI_API_KEY=/d' {path} && "
               f"printf 'OPENAI_API_KEY=%s\\n' \"$k\" >> {path} && chmod 600 {path}")
        return
    yield (f"umask 077 && {read} && "
           f"{{ [ -s {path} ] || printf 'WEBUI_SECRET_KEY=%s\\nOPENAI_API_KEY=%s\\n' \"$({NEW_SECRET})\" \"$k\" > {path}; }} && "
           f"chmod 600 {path}")


@operation()
def backed_up_before_upgrade(script: str, root: str, wanted: str, db: str, reason: str):
    """Ensure Open WebUI's data is backed up before its venv changes: a backup is taken when ``<root>/current``
    points elsewhere than ``wanted`` and a database exists (a first install has nothing to back up).

    + script: the backup tool on the host (llmhost-webui-backup)
    + root: Open WebUI's venv root (holding the ``current`` link)
    + wanted: the venv this run switches to
    + db: Open WebUI's SQLite database
    + reason: the word in the backup's name (e.g. ``before-0.12.4``)"""
    link = host.get_fact(Link, path=f"{root}/current")
    current = link.get("link_target", "") if link else ""
    if current == wanted:
        host.noop("Open WebUI's venv stays: no upgrade, no backup needed")
        return
    if not current or not host.get_fact(File, path=db):
        host.noop("no Open WebUI database yet: nothing to back up")
        return
    yield boundary.shell_line(["runuser", "-u", "llmhost-webui", "--", script, "backup", "--reason", reason])


def admin_file(ctx: Context) -> str:
    return f"{ctx.s.config_root}/open-webui.admin.env"


def admin_password(ctx: Context):
    """The first admin's password, in a root-only env file Open WebUI reads at start (it creates the admin only
    while no user exists): from the controller's $openwebui_admin_password_env when set, else generated on the
    host once (never rotated; verify shows it once, at the end of the run that made it)."""
    s = ctx.s
    given = os.environ.get(s.openwebui_admin_password_env)
    if given:
        return secret_file(name=f"Open WebUI admin password (${s.openwebui_admin_password_env}, root-only)",
                           path=admin_file(ctx), content=boundary.env_file({"WEBUI_ADMIN_PASSWORD": given},
                                                                           f"${s.openwebui_admin_password_env}"))
    return generated_secret(name="Open WebUI admin password (generated on the host, root-only)",
                            path=admin_file(ctx), variable="WEBUI_ADMIN_PASSWORD")


def embedding(ctx: Context) -> dict | None:
    """Where the pinned embedding model lives on the host (in Open WebUI's data, owned by its user), or None."""
    s = ctx.s
    if not s.rag_embedding_repo:
        return None
    cache, repo, commit = f"{s.data_root}/open-webui/embedding", s.rag_embedding_repo, s.rag_embedding_revision
    return dict(cache=cache, repo=repo, commit=commit, marker=completion_marker(cache, repo, commit),
                path=hf_snapshot(cache, repo, commit))


def env_vars(ctx: Context) -> dict:
    s = ctx.s
    emb = embedding(ctx)
    return dict(config_root=s.config_root, data_root=s.data_root, api_base=ctx.api.base + "/v1",
                enable_signup=s.openwebui_enable_signup, https_domain=s.https_domain,
                served_model_name=s.served_model_name, embedding_path=emb["path"] if emb else "",
                embedding_cache=emb["cache"] if emb else "", admin_email=s.openwebui_admin_email,
                function_calling="native" if ctx.family.tool_call_parser else "legacy", family_why=ctx.family.why)


def backup_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(data_root=s.data_root, backups=f"{s.data_root}/backups", keep=s.openwebui_backups_keep,
                venv_root=f"{s.install_root}/open-webui", script=f"{s.install_root}/bin/llmhost-webui-backup",
                calendar=s.openwebui_backup_calendar)


def venv_args(s) -> tuple[list[str], list[str]]:
    """Open WebUI's requirements and uv's extra arguments: its torch through --torch-backend (openwebui_torch_backend;
    a CPU torch by default: the unit never sees the GPU)."""
    return ([f"open-webui=={s.openwebui_version}", *s.openwebui_extra_requirements],
            ["--torch-backend", s.openwebui_torch_backend] if s.openwebui_torch_backend != "none" else [])


def unit_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(version=s.openwebui_version, config_root=s.config_root, data_root=s.data_root,
                venv=f"{s.install_root}/open-webui/current", host=s.openwebui_host, port=s.openwebui_port,
                probe=ctx.probe, webui_connect=ctx.connect(s.openwebui_host), start_timeout=START_TIMEOUT)


@deploy("Open WebUI service")
def ensure(ctx: Context) -> Result:
    s = ctx.s
    if not ctx.serves_webui:
        skipped(name="Open WebUI (skipped: a GPU host of the fleet)", reason="this host is in gpu_hosts only")
        return Result([], None)
    files.directory(name="Open WebUI data (kept across upgrades)", path=f"{s.data_root}/open-webui",
                    user="llmhost-webui", group="llmhost-webui", mode="750")
    emb = embedding(ctx)
    weights = snapshot(name=f"Embedding model {emb['repo']}@{emb['commit'][:12]} (documents offline)",
                       marker=emb["marker"], fetch=fetch_command(ctx, emb["repo"], emb["commit"], emb["marker"],
                                                                 emb["cache"]),
                       owner="llmhost-webui", cache_dir=emb["cache"]) if emb else None
    secret = session_secret(name="Session secret (generated on the host, root-only)", config_root=s.config_root,
                            key_file=ctx.api.key_file, key_var=ctx.api.key_var)
    admin = admin_password(ctx)
    backups, script = f"{s.data_root}/backups", f"{s.install_root}/bin/llmhost-webui-backup"
    files.directory(name=f"Backups {backups} (Open WebUI's user only)", path=backups, user="llmhost-webui",
                    group="llmhost-webui", mode="700")
    bvars = backup_vars(ctx)
    host_program("Backup tool llmhost-webui-backup", "webui_backup", script, backup_vars(ctx))
    root = f"{s.install_root}/open-webui"
    requirements, torch = venv_args(s)
    wanted = python_venv.target(root, s.openwebui_python, requirements, s.pip_index_url, s.pip_find_links, torch)
    backed_up_before_upgrade(name="Back up Open WebUI's data before its venv changes", script=script, root=root,
                             wanted=wanted, db=f"{s.data_root}/open-webui/webui.db",
                             reason=f"before-{s.openwebui_version}")
    venv = python_venv.venv(name=f"Open WebUI {s.openwebui_version} venv", root=root, python=s.openwebui_python,
                            uv=ctx.uv, requirements=requirements, index_url=s.pip_index_url,
                            find_links=s.pip_find_links, env=ctx.download_env, extra_args=torch)
    env = files.put(create_remote_dir=False, name="Open WebUI environment (no secrets)",
                    src=rendered("open-webui.env.j2", **env_vars(ctx)),
                    dest=f"{s.config_root}/open-webui.env", mode="644")
    unit = files.put(create_remote_dir=False, name="open-webui.service",
                     src=rendered("open-webui.service.j2", **unit_vars(ctx)),
                     dest="/etc/systemd/system/open-webui.service", mode="644")
    changes = [secret, admin, venv, env, unit] + ([weights] if weights else [])
    timer_units = [files.put(create_remote_dir=False, name=f"{unit_name}",
                             src=rendered(f"{unit_name}.j2", **bvars),
                             dest=f"/etc/systemd/system/{unit_name}", mode="644")
                   for unit_name in ("llmhost-webui-backup.service", "llmhost-webui-backup.timer")]
    systemd.daemon_reload(name="Reload systemd (open-webui.service or the backup units changed)",
                          _if=any_changed(unit, *timer_units))
    systemd.service(name="Backup timer running and enabled", service="llmhost-webui-backup.timer", running=True,
                    enabled=True)
    systemd.service(name="Open WebUI restarted (only when its unit, env, secret or venv changed)",
                    service="open-webui.service", running=True, restarted=True, _if=any_changed(*changes))
    systemd.service(name="Open WebUI running and enabled", service="open-webui.service", running=True,
                    enabled=True)
    return Result(changes, None if os.environ.get(s.openwebui_admin_password_env) else admin)
