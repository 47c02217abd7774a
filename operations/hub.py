"""The Hub client: repo + revision resolved with huggingface_hub, config.json (+ quantize_config.json) read through
the controller's HF cache. One read path for preflight and for the planner's command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from operations.context import LlmhostError
from operations.core.settings import Settings


def read_json(repo: str, revision: str | None, filename: str, endpoint: str | None, token: str | None,
              offline: bool = False) -> dict | None:
    """One JSON file of repo@revision through the controller's HF cache (None when the repo has no such file).

    A file of a pinned commit already in the cache needs no request; _CACHED_NO_EXIST (exported at the top level
    and documented with try_to_load_from_cache) remembers that a file does not exist, so a repo without
    quantize_config.json is not asked about it again."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError

    if revision:
        cached = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
        if cached is _CACHED_NO_EXIST:
            return None
    if offline:
        return None
    try:
        return json.loads(Path(hf_hub_download(repo, filename, revision=revision, endpoint=endpoint,
                                               token=token)).read_text())
    except EntryNotFoundError:
        return None


def chat_template(repo: str, revision: str, endpoint: str | None, token: str | None, offline: bool = False
                  ) -> str | None:
    """The repo's chat template as transformers finds it: tokenizer_config.json's chat_template (the default one
    of a list), else chat_template.jinja; None when it has none."""
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import EntryNotFoundError

    tc = read_json(repo, revision, "tokenizer_config.json", endpoint, token, offline) or {}
    template = tc.get("chat_template")
    if isinstance(template, list):
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if isinstance(template, str):
        return template
    cached = try_to_load_from_cache(repo, "chat_template.jinja", revision=revision)
    if isinstance(cached, str):
        return Path(cached).read_text()
    if cached is _CACHED_NO_EXIST or offline:
        return None
    try:
        return Path(hf_hub_download(repo, "chat_template.jinja", revision=revision, endpoint=endpoint,
                                    token=token)).read_text()
    except EntryNotFoundError:
        return None


def offline() -> bool:
    """huggingface_hub's own switch, HF_HUB_OFFLINE, on the controller."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def model_config(s: Settings, who: str) -> tuple[dict, dict | None, str, int]:
    """Resolve repo + revision on the controller and read config.json (+ quantize_config.json)."""
    from huggingface_hub import try_to_load_from_cache

    token = os.environ.get(s.hf_token_env) or None
    off = offline()
    # A pinned commit never changes: when its config.json is already in the controller's cache (every re-run after
    # the first), the Hub is not asked again; air-gapped controllers rely on that cache alone.
    cached = isinstance(try_to_load_from_cache(s.model_repo, "config.json", revision=s.model_revision), str)
    if off or cached:
        sha, size = s.model_revision, 0
    else:
        sha, size = resolve(s, s.model_repo, s.model_revision, token, who)

    def read(filename: str) -> dict | None:
        return read_json(s.model_repo, sha, filename, s.hf_endpoint, token, off)

    cfg = read("config.json")
    if cfg is None and off:
        raise LlmhostError(f"{who}: HF_HUB_OFFLINE is set and {s.model_repo}@{s.model_revision} "
                           "config.json is not in the controller's cache: unset HF_HUB_OFFLINE or pre-fetch "
                           "it with `llmhost-plan --model REPO@REV`")
    if cfg is None:
        raise LlmhostError(f"{who}: {s.model_repo}@{s.model_revision} has no config.json: "
                           "model_repo must be a transformers model repo")
    return cfg, read("quantize_config.json"), sha, size


def check_embedding(s: Settings, who: str) -> None:
    """The pinned embedding model exists and is a sentence-transformers model, checked before any change. Its
    modules.json lands in the controller's cache, so later runs ask the Hub nothing; offline controllers skip this
    (the host's fetch decides)."""
    if not s.rag_embedding_repo or offline():
        return
    token = os.environ.get(s.hf_token_env) or None
    repo, rev = s.rag_embedding_repo, s.rag_embedding_revision
    if read_json(repo, rev, "modules.json", s.hf_endpoint, token, offline=True) is not None:
        return
    resolve(s, repo, rev, token, who, ("rag_embedding_repo", "rag_embedding_revision"))
    if read_json(repo, rev, "modules.json", s.hf_endpoint, token) is None:
        raise LlmhostError(f"{who}: rag_embedding_repo={repo} has no modules.json: it must be a "
                           "sentence-transformers model (or set rag_embedding_repo to None)")


def _network_error(exc: BaseException) -> bool:
    """A transport failure of any HTTP stack huggingface_hub has used (requests in 0.x, httpx / httpx2 later)."""
    return isinstance(exc, OSError) or any(
        c.__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2")
        and c.__name__ in ("TransportError", "RequestError", "ConnectionError", "Timeout", "TimeoutException")
        for c in type(exc).__mro__)


def resolve(s: Settings, repo: str, revision: str, token: str | None, who: str,
             names: tuple[str, str] = ("model_repo", "model_revision")) -> tuple[str, int]:
    """Check repo + revision on the hub: (commit sha, total size in bytes, 0 when the hub does not say). ``names``:
    the settings that hold them, for the messages."""
    repo_name, rev_name = names
    from huggingface_hub import HfApi
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    api = HfApi(endpoint=s.hf_endpoint, token=token)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise LlmhostError(f"{who}: {repo_name}={repo} is gated: accept its licence on the hub and "
                           f"export {s.hf_token_env}=<token> on the controller") from None
    except RevisionNotFoundError:
        raise LlmhostError(f"{who}: {rev_name}={revision} does not exist in {repo}: "
                           "pin a commit from the repo's history") from None
    except RepositoryNotFoundError:
        hint = "" if token else f" (if it is private or gated, export {s.hf_token_env})"
        raise LlmhostError(f"{who}: {repo_name}={repo} was not found on {s.hf_endpoint}{hint}: "
                           f"fix {repo_name}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            raise LlmhostError(f"{who}: {repo_name}={repo} at {rev_name}={revision} was "
                               f"not found on {s.hf_endpoint}: fix {repo_name} / {rev_name}") from None
        raise LlmhostError(f"{who}: {s.hf_endpoint} refused the check of {repo_name}={repo} at {rev_name}={revision} "
                           f"({status}): check {repo_name} / {rev_name}, hf_endpoint and {s.hf_token_env}") from None
    except Exception as exc:  # noqa: BLE001 - network errors differ by huggingface_hub version (requests, httpx2)
        if not _network_error(exc):
            raise
        raise LlmhostError(f"{who}: cannot reach {s.hf_endpoint} to check {repo_name} "
                           f"({type(exc).__name__}: {exc}); check hf_endpoint and the controller's network") from None
    return info.sha, fetched_size(api, repo, info)


FETCH_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja"]  # the fetcher's


def fetched_size(api, repo: str, info) -> int:
    """Bytes the fetcher downloads of repo@info.sha: the files matching FETCH_PATTERNS, sized by the hub's tree
    (model_info's siblings carry no sizes on some hubs); 0 when the hub says nothing."""
    from fnmatch import fnmatch

    try:
        files = [(f.path, f.size) for f in api.list_repo_tree(repo, revision=info.sha, recursive=True)
                 if getattr(f, "size", None) is not None]
    except Exception:  # noqa: BLE001 - a hub without the tree API: the siblings' sizes, if any
        files = [(sib.rfilename, sib.size) for sib in (info.siblings or []) if sib.size]
    return sum(size for path, size in files if any(fnmatch(path, p) for p in FETCH_PATTERNS))
