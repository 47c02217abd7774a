"""The Hub client: repo + revision resolved with huggingface_hub, config.json (+ quantize_config.json) read through
the controller's HF cache. One read path for preflight and for the planner's command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

from operations.context import LlmhostError
from operations.settings import Settings


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


def model_config(s: Settings, who: str) -> tuple[dict, dict | None, str, int]:
    """Resolve repo + revision on the controller and read config.json (+ quantize_config.json)."""
    from huggingface_hub import try_to_load_from_cache

    token = os.environ.get(s.hf_token_env) or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    # A pinned commit never changes: when its config.json is already in the controller's cache (every re-run after
    # the first), the Hub is not asked again; air-gapped controllers rely on that cache alone.
    cached = isinstance(try_to_load_from_cache(s.model_repo, "config.json", revision=s.model_revision), str)
    if offline or cached:
        sha, size = s.model_revision, 0
    else:
        sha, size = _resolve(s, token, who)

    def read(filename: str) -> dict | None:
        return read_json(s.model_repo, sha, filename, s.hf_endpoint, token, offline)

    cfg = read("config.json")
    if cfg is None and offline:
        raise LlmhostError(f"{who}: HF_HUB_OFFLINE is set and {s.model_repo}@{s.model_revision} "
                           "config.json is not in the controller's cache: unset HF_HUB_OFFLINE or pre-fetch "
                           "it with `llmhost-plan --model REPO@REV`")
    if cfg is None:
        raise LlmhostError(f"{who}: {s.model_repo}@{s.model_revision} has no config.json: "
                           "model_repo must be a transformers model repo")
    return cfg, read("quantize_config.json"), sha, size


def _network_error(exc: BaseException) -> bool:
    """A transport failure of any HTTP stack huggingface_hub has used (requests in 0.x, httpx / httpx2 later)."""
    return isinstance(exc, OSError) or any(
        c.__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2")
        and c.__name__ in ("TransportError", "RequestError", "ConnectionError", "Timeout", "TimeoutException")
        for c in type(exc).__mro__)


def _resolve(s: Settings, token: str | None, who: str) -> tuple[str, int]:
    """Check repo + revision on the hub: (commit sha, total size in bytes, 0 when the hub does not say)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    api = HfApi(endpoint=s.hf_endpoint, token=token)
    try:
        info = api.model_info(s.model_repo, revision=s.model_revision, files_metadata=True)
    except GatedRepoError:
        raise LlmhostError(f"{who}: model_repo={s.model_repo} is gated: accept its licence on the hub and "
                           f"export {s.hf_token_env}=<token> on the controller") from None
    except RevisionNotFoundError:
        raise LlmhostError(f"{who}: model_revision={s.model_revision} does not exist in {s.model_repo}: "
                           "pin a commit from the repo's history") from None
    except RepositoryNotFoundError:
        hint = "" if token else f" (if it is private or gated, export {s.hf_token_env})"
        raise LlmhostError(f"{who}: model_repo={s.model_repo} was not found on {s.hf_endpoint}{hint}: "
                           "fix model_repo") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            raise LlmhostError(f"{who}: model_repo={s.model_repo} at model_revision={s.model_revision} was "
                               f"not found on {s.hf_endpoint}: fix model_repo / model_revision") from None
        raise LlmhostError(f"{who}: {s.hf_endpoint} refused the model check ({status}): check hf_endpoint "
                           f"and {s.hf_token_env}") from None
    except Exception as exc:  # noqa: BLE001 - network errors differ by huggingface_hub version (requests, httpx2)
        if not _network_error(exc):
            raise
        raise LlmhostError(f"{who}: cannot reach {s.hf_endpoint} to check model_repo "
                           f"({type(exc).__name__}: {exc}); check hf_endpoint and the controller's network") from None
    return info.sha, sum((sib.size or 0) for sib in (info.siblings or []))
