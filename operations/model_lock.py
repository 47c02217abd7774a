"""The lock of catalogue models on the controller (``model_lock_file``, default inventories/llmhost.lock): the commit
each ``model: <name>`` resolved to on the Hub. The first run that names a model resolves its repo's head, checks the
files there against the catalogue entry (operations/core/catalogue.py) and writes the commit; later runs read it
(reproducible, offline); ``--data model_lock=update`` resolves again. Nothing here touches a host."""

from __future__ import annotations

import json
import os
from pathlib import Path

from operations.context import LlmhostError
from operations.core import catalogue
from operations.core.settings import SHA_RE, Settings
from operations.hub import chat_template, offline, read_json, resolve

COMMENT = ("llmhost's lock of catalogue models (setting `model`): the commit each name resolved to on the Hub. "
           "Review and commit it like any lock; `--data model_lock=update` resolves a name again.")


def read(path: Path) -> dict[str, dict[str, str]]:
    """name -> {"repo", "commit"}; {} when there is no lock yet; LlmhostError naming the file when it is not one."""
    if not path.exists():
        return {}
    try:
        models = json.loads(path.read_text())["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not an object")
        for name, pin in models.items():
            if set(pin) != {"repo", "commit"} or not SHA_RE.match(str(pin["commit"])):
                raise ValueError(f"{name!r}: wants exactly repo and a 40-hex commit")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LlmhostError(f"model_lock_file={path} is not an llmhost lock ({type(exc).__name__}: {exc}): restore it "
                           "from git, or delete it and re-run to resolve every model again") from None
    return models


def write(path: Path, models: dict[str, dict[str, str]]) -> None:
    """The whole lock, sorted, replaced in one rename (a run killed mid-write leaves the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"comment": COMMENT, "models": dict(sorted(models.items()))}, indent=2) + "\n")
    os.replace(tmp, path)


def check(s: Settings, commit: str, who: str, token: str | None) -> None:
    """The files of the entry's repo at commit (config.json, quantize_config.json, the chat template; the
    controller's HF cache first) are what the entry says, for this era: LlmhostError otherwise."""
    e = catalogue.entry(s.model)
    off = offline()
    config = read_json(e.repo, commit, "config.json", s.hf_endpoint, token, off)
    if config is None:
        raise LlmhostError(f"{who}: model={s.model}: {e.repo}@{commit[:12]} has no config.json"
                           + (" in the controller's cache (HF_HUB_OFFLINE is set)" if off else ""))
    try:
        catalogue.check(e, config, read_json(e.repo, commit, "quantize_config.json", s.hf_endpoint, token, off),
                        chat_template(e.repo, commit, s.hf_endpoint, token, off), s.vllm_version)
    except catalogue.CatalogueError as exc:
        raise LlmhostError(f"{who}: {exc}") from None


def pinned(s: Settings, who: str) -> tuple[Settings, str | None]:
    """``s`` with model_revision from the lock when ``model`` is set (resolving and locking it first when the lock
    has no line for it, or model_lock=update), and what was written, for the log (None: nothing)."""
    if not s.model:
        return s, None
    e = catalogue.entry(s.model)
    path = Path(s.model_lock_file)
    models = read(path)
    held = models.get(s.model)
    if held and s.model_lock == "use":
        if held["repo"] != e.repo:
            raise LlmhostError(f"{who}: {path} locks model={s.model} to {held['repo']}, the catalogue now names "
                               f"{e.repo}: re-resolve with --data model_lock=update (and review the lock's diff)")
        check(s, held["commit"], who, os.environ.get(s.hf_token_env) or None)
        return s.model_copy(update={"model_revision": held["commit"]}), None
    if offline():
        raise LlmhostError(f"{who}: model={s.model} is not in {path} and HF_HUB_OFFLINE is set: run once with the "
                           "Hub reachable to lock it, or restore the lock from git")
    token = os.environ.get(s.hf_token_env) or None
    commit, _ = resolve(s, e.repo, "main", token, who, ("model's repo", "its branch"))
    check(s, commit, who, token)
    was = held["commit"] if held else None
    if was != commit or not held:
        models[s.model] = {"repo": e.repo, "commit": commit}
        write(path, models)
    note = (f"{path}: model={s.model} locked to {e.repo}@{commit}" + (f" (was {was[:12]})" if was and was != commit
                                                                      else " (unchanged)" if was else "")
            + ": review and commit the lock")
    return s.model_copy(update={"model_revision": commit}), note
