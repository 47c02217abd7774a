#!/usr/bin/python3
# Managed by llmhost (operations/hostside/probe.py; its values in llmhost-probe.json beside it): checks what the
# deploy promises. Prints JSON, never a secret; exit 0 only when all is well.
#   llmhost-probe            one look
#   llmhost-probe --wait N   keep looking for up to N seconds
#   llmhost-probe --health URL --wait N   only wait for URL to answer 200 (units' readiness gate)
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

with open(os.path.realpath(__file__) + ".json", encoding="utf-8") as _fh:  # the values the deploy wrote beside it
    CONFIG = json.load(_fh)

API = CONFIG["api"]  # vLLM here, the router in front of the fleet's vLLM hosts, or None
API_HEALTH = CONFIG["api_health"]
WEBUI = f"http://{CONFIG['webui_connect']}:{CONFIG['webui_port']}" if CONFIG["webui"] else None
MODEL = CONFIG["served_model_name"]
GPU = CONFIG["gpu_host"]
SECRET_ENV, KEY_VAR = CONFIG["key_file"], CONFIG["key_var"]
ADMIN_ENV, ADMIN_EMAIL = CONFIG["admin_file"], CONFIG["admin_email"]
TOKEN_FILE = CONFIG["token_file"]  # root-only, beside the password (a cache of this probe's)


def get(url, data=None, key=None, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data else None)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


ENV_ESCAPED = '"\\`$'  # what systemd unescapes inside a double-quoted EnvironmentFile value


def unquote(raw):
    """An EnvironmentFile value as systemd reads it, for the two forms llmhost's one writer emits
    (operations/core/boundary.env_value): a plain word, or double quotes with \\ " ` $ escaped."""
    raw = raw.rstrip("\n")
    if not raw.startswith('"'):
        return raw.rstrip()
    out, i = [], 1
    while i < len(raw) and raw[i] != '"':
        if raw[i] == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1] if raw[i + 1] in ENV_ESCAPED else raw[i:i + 2])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def env_value(path, var):
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(var + "="):
                    return unquote(line.split("=", 1)[1])
    except OSError:
        return None


def api_key():
    return env_value(SECRET_ENV, KEY_VAR)


def signin(password):
    """A token for the admin: the one this probe kept (root-only, beside the password) or a new sign-in. Open WebUI
    allows 15 sign-ins per email in 3 minutes (a 429 after that), so the probe signs in only when it has no token
    or the kept one is refused."""
    try:
        with open(TOKEN_FILE) as fh:
            return fh.read().strip(), True
    except OSError:
        pass
    status, body = get(WEBUI + "/api/v1/auths/signin", {"email": ADMIN_EMAIL, "password": password}, timeout=30)
    token = json.loads(body)["token"]
    old = os.umask(0o077)
    try:
        with open(TOKEN_FILE + ".tmp", "w") as fh:
            fh.write(token + "\n")
        os.replace(TOKEN_FILE + ".tmp", TOKEN_FILE)
    finally:
        os.umask(old)
    return token, False


def chat_stream(token):
    req = urllib.request.Request(WEBUI + "/api/chat/completions", data=json.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Say hello."}]}).encode())
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    parts, done = [], False
    with urllib.request.urlopen(req, timeout=300) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
                break
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk or "detail" in chunk:
                    return None, f"Open WebUI chat: {json.dumps(chunk)[:300]}"
                for choice in chunk.get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
            elif line.startswith("{"):  # a JSON error instead of a stream
                return None, f"Open WebUI chat: {line[:300]}"
    if not done:
        return None, "Open WebUI chat: the stream ended without [DONE]"
    return "".join(parts), None


def webui_chat():
    """A chat as a user sends it: signed in as the admin, through Open WebUI's own /api/chat/completions (so the
    request carries what Open WebUI adds: its model defaults, function-calling mode), streamed, no sampling
    parameters (the model's generation_config applies). Returns (answer, None) or (None, why)."""
    password = env_value(ADMIN_ENV, "WEBUI_ADMIN_PASSWORD")
    if not password:
        return None, f"no admin password in {ADMIN_ENV}"
    for attempt in (1, 2):
        try:
            token, kept = signin(password)
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 401, 403):  # the password Open WebUI was given is not the one it signs in with
                return None, (f"Open WebUI refused the sign-in of {ADMIN_EMAIL} with the password in {ADMIN_ENV} "
                              f"(HTTP {exc.code}): an install whose users predate llmhost's admin needs "
                              "openwebui_admin_email and the admin password setting of an existing admin")
            return None, f"Open WebUI sign-in: HTTP {exc.code}"
        try:
            return chat_stream(token)
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and kept and attempt == 1:  # the kept token expired or the data was restored
                os.unlink(TOKEN_FILE)
                continue
            return None, f"Open WebUI chat: HTTP {exc.code}"
    return None, "Open WebUI chat: no token"


def look():
    out = {"ok": False}
    try:
        if GPU:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            out["gpus"] = smi.stdout.split("\n")[0].strip() if smi.returncode == 0 else f"nvidia-smi failed: {smi.stdout}{smi.stderr}".strip()
            if smi.returncode != 0:
                return out
        if API is None:  # a headless multi-node stage: its GPU is all there is to see here
            out["ok"] = True
            return out
        key = api_key()
        out["api_health"] = get(API + API_HEALTH)[0]
        models = json.loads(get(API + "/v1/models", key=key)[1])
        out["models"] = [m["id"] for m in models.get("data", [])]
        if MODEL not in out["models"]:
            return out
        body = {"model": MODEL, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}
        reply = json.loads(get(API + "/v1/chat/completions", body, key=key, timeout=120)[1])
        out["completion"] = reply["choices"][0]["message"]["content"]
        if WEBUI:
            out["webui_health"] = get(WEBUI + "/health")[0]
            answer, why = webui_chat()
            out["webui_chat"] = answer if why is None else why
            if answer is None:
                return out
        out["ok"] = bool(out["completion"]) and out.get("webui_health", 200) == 200
    except Exception as exc:  # the probe reports, it does not crash
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def main(argv):
    wait = int(argv[argv.index("--wait") + 1]) if "--wait" in argv else 0
    health = argv[argv.index("--health") + 1] if "--health" in argv else None
    deadline = time.monotonic() + wait
    while True:
        if health:
            try:
                ok = get(health)[0] == 200
            except Exception:
                ok = False
            result = {"ok": ok, "health": health}
        else:
            result = look()
        if result["ok"] or time.monotonic() >= deadline:
            print(json.dumps(result, sort_keys=True))
            return 0 if result["ok"] else 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
