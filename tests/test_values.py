"""Every value reaches the host intact or is refused (issue 27): the one quoting boundary per kind of file
(operations/core/boundary.py), generated inputs through every text setting and every controller secret, the rendered
units judged by systemd's own parser (`systemd-analyze verify`), shell lines by bash, env files by the host's own
reader (the probe's) — which the real tier checks against systemd itself (tests/test_realhost.py).

Hypothesis runs a fixed budget here (LLMHOST_HYPOTHESIS_EXAMPLES, default 200 per property); more on demand."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from operations import openwebui_service, vllm_service
from operations.context import Context
from operations.core import boundary
from operations.core.settings import TEXT_FIELDS, Settings, SettingsError
from operations.core.tuning import GpuSpec, ModelSpec, plan
from operations.render import DIRS, RawValueError, render
from tests.conftest import host_program
from tests.test_eras import GPTQ_CFG, GPTQ_Q

EXAMPLES = int(os.environ.get("LLMHOST_HYPOTHESIS_EXAMPLES", "200"))
BUDGET = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("LLMHOST_HYPOTHESIS_RANDOM"),
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SHA = "db1f81ad4b8c7e39777509fac66c652eb0a52f91"
# What users paste: shell, systemd and env-file syntax, quotes, escapes, non-ASCII, and the control characters
# that no file can carry (those must be refused).
CHARS = st.sampled_from(list(" \"'\\$%`#;&|<>(){}[]*?!~=,:@/-\n\r\t\x00\x7fé€😀"))
PIECES = st.sampled_from(["$(id)", "${HOME}", "%h", "%%", "\\n", "--x", "a", "WEBUI_AUTH=False"])
TEXT = st.text(st.one_of(st.characters(), CHARS), max_size=40) | st.lists(CHARS | PIECES, max_size=12).map("".join)


def has_control(value: str) -> bool:
    return bool(boundary.CONTROL.search(value)) or any(0xD800 <= ord(c) <= 0xDFFF for c in value)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The probe as the deploy installs it, loaded as a module: its env-file reader is the host's."""
    import importlib.util

    path = host_program(tmp_path_factory.mktemp("probe"), "probe", dict(
        api=None, api_health="/health", webui=False, webui_connect="", webui_port=0, served_model_name="m",
        gpu_host=False, key_file="", key_var="", admin_file="", admin_email="", token_file=""), "probe_mod.py")
    spec = importlib.util.spec_from_file_location("probe_mod", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- systemd's command-line rules, as written in systemd.service(5) "Command lines" and load-fragment.c's
# config_parse_exec (unquote, C escapes, then specifiers and $ at exec): a reading aid for fast feedback; the real
# tier runs systemd itself on the same boundary.
def systemd_words(line: str) -> list[str]:
    words, i = [], 0
    while i < len(line):
        while i < len(line) and line[i] == " ":
            i += 1
        if i >= len(line):
            break
        word, quote = "", None
        while i < len(line) and (quote or line[i] != " "):
            c = line[i]
            if quote and c == quote:
                quote = None
            elif not quote and c in "\"'":
                quote = c
            elif c == "\\":
                nxt = line[i + 1]
                word += {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", " ": " "}.get(nxt, "\\" + nxt)
                i += 1
            else:
                word += c
            i += 1
        assert quote is None, f"unbalanced quoting in {line!r}"
        words.append(word)
    specifiers = lambda w: re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else "<" + m.group(1) + ">", w)
    dollars = lambda w: re.sub(r"\$(\$|\{?\w+\}?)", lambda m: "$" if m.group(1) == "$" else "<var>", w)
    return [dollars(specifiers(w)) for w in words]


@BUDGET
@given(TEXT)
def test_env_values_round_trip_through_the_hosts_reader_or_are_refused(probe, value):
    if has_control(value):
        with pytest.raises(boundary.BoundaryError, match="^VALUE: "):
            boundary.env_file({"X": value}, "VALUE")
        return
    text = boundary.env_file({"X": value}, "VALUE")
    assert text.count("\n") == 1 and text.endswith("\n") and text.startswith("X=")  # one line, one variable
    assert probe.unquote(text.split("=", 1)[1]) == value


@BUDGET
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_unit_command_lines_split_back_into_exactly_the_arguments(args):
    argv = ["/opt/llmhost/bin/x", *args]
    if any(has_control(a) for a in args):
        with pytest.raises(boundary.BoundaryError):
            boundary.exec_line(argv, "ARGS")
        return
    line = boundary.exec_line(argv, "ARGS")
    assert "\n" not in line
    assert systemd_words(line) == argv  # no extra argument, no specifier, no variable


@BUDGET
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_shell_lines_are_read_back_by_bash_as_the_arguments(args):
    if any(has_control(a) for a in args):
        with pytest.raises(boundary.BoundaryError):
            boundary.shell_line(["printf", "%s\\0", *args])
        return
    line = boundary.shell_line(["printf", "%s\\0", *args])
    out = subprocess.run(["bash", "-c", line], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode() for a in args]


# --- every text setting, generated values: a one-line refusal naming the setting, or accepted --------------------
@pytest.mark.parametrize("name", sorted(TEXT_FIELDS))
def test_every_text_setting_refuses_in_one_line_naming_itself_or_accepts(name):
    @BUDGET
    @given(TEXT)
    def check(value):
        try:
            Settings.from_host_data({"gpu_card": "rtx-3060-12gb", name: value}, "home")
        except SettingsError as exc:
            assert "\n" not in str(exc) and "\r" not in str(exc), str(exc)
            assert name in str(exc), str(exc)
            return
        assert not has_control(value), f"{name} accepted a control character: {value!r}"

    check()


def ctx(**settings) -> Context:
    s = Settings(gpu_card="rtx-3060-12gb", **settings)
    p = plan(ModelSpec.from_config(GPTQ_CFG, GPTQ_Q), GpuSpec.from_card("rtx-3060-12gb"), s.vllm_version)
    return Context(s, "ubuntu", "24.04", None, {}, p, SHA, "open")


def env_of(probe, text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, raw = line.split("=", 1)
            assert key not in out, f"{key} twice"
            out[key] = probe.unquote(raw)
    return out


def test_the_served_name_and_admin_email_reach_open_webui_vllm_and_the_unit_intact(probe):
    """Accepted values of the settings that reach an env file and a unit line: parsed back, exactly the value and
    the same variables and arguments as with the defaults (no extra line, variable or argument)."""
    base_env = env_of(probe, render("open-webui.env.j2", **openwebui_service.env_vars(ctx())))
    base_argv = systemd_words(vllm_service.exec_start(ctx(), "/opt/llmhost/vllm/current"))

    @BUDGET
    @given(TEXT, TEXT)
    def check(name, email):
        try:
            c = ctx(vllm_served_model_name=name, openwebui_admin_email=email + "@example.org")
        except (SettingsError, ValueError):
            return
        env = env_of(probe, render("open-webui.env.j2", **openwebui_service.env_vars(c)))
        assert set(env) == set(base_env)
        assert env["DEFAULT_MODELS"] == name and env["WEBUI_ADMIN_EMAIL"] == email + "@example.org"
        argv = systemd_words(vllm_service.exec_start(c, "/opt/llmhost/vllm/current"))
        assert len(argv) == len(base_argv) and argv[argv.index("--served-model-name") + 1] == name
        unit = render("vllm.service.j2", **vllm_service.unit_vars(c))
        assert len(unit.splitlines()) == len(render("vllm.service.j2", **vllm_service.unit_vars(ctx())).splitlines())

    check()


def test_units_with_awkward_values_pass_systemd_analyze_verify(tmp_path):
    """systemd's own parser on the controller: no unbalanced quoting, no unknown specifier, no continued line."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "opt"
    for exe in ("bin/llmhost-probe", "vllm/current/bin/python", "vllm/current/bin/vllm",
                "open-webui/current/bin/open-webui"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy("/bin/true", root / exe)
    c = ctx(install_root=str(root), vllm_served_model_name='my "llama" %h $VLLM_API_KEY ${HOME} \\ é;',
            openwebui_admin_email="a\\b@example.org")
    for name, text in (("vllm.service", render("vllm.service.j2", **vllm_service.unit_vars(c))),
                       ("open-webui.service", render("open-webui.service.j2", **openwebui_service.unit_vars(c)))):
        (tmp_path / name).write_text(text.replace("User=llmhost-vllm", "").replace("Group=llmhost-vllm", "")
                                     .replace("User=llmhost-webui", "").replace("Group=llmhost-webui", ""))
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / name)], capture_output=True,
                           text=True)
        assert p.returncode == 0 and "ignoring" not in p.stderr, p.stderr


def test_no_template_writes_a_string_without_a_quoting_filter():
    """Statically (branches no test renders too): every {{ }} that can carry a string ends in a boundary filter."""
    numbers = {"port", "start_timeout + 30", "start_timeout", "keep", "backends", "num_retries", "gpu_temp_c",
               "vllm_port", "step_timeout"}
    # a whole command line (boundary.exec_line), whole env-file lines (boundary.env_file): Quoted, the render guard
    # checks it
    quoted = {"exec_start", "test_env"}
    raw = []
    for d in DIRS:
        for path in sorted(d.glob("*.j2")):
            text = re.sub(r"{%\s*raw\s*%}.*?{%\s*endraw\s*%}", "", path.read_text(), flags=re.S)
            for expr in re.findall(r"{{\s*(.*?)\s*}}", text):
                if not re.search(r"\|\s*(env|exec|unit|token|tokens|comment|tojson)\s*$", expr) and expr not in numbers | quoted:
                    raw.append(f"{path.name}: {{{{ {expr} }}}}")
    assert not raw, raw


def test_a_raw_interpolation_stops_the_render(tmp_path, monkeypatch):
    """The render-time guard: a template that writes a plain string (a raw {{ value }}) does not render."""
    from operations import render as render_module

    (tmp_path / "raw.j2").write_text("X={{ value }}\n")
    monkeypatch.setattr(render_module, "DIRS", (tmp_path,))
    with pytest.raises(RawValueError):
        render_module.render("raw.j2", value="x\nWEBUI_AUTH=False")
    assert render_module.render("raw.j2", value=boundary.env_value("ok", "v")) == "X=ok\n"


# --- controller secrets ----------------------------------------------------------------------------------------
SECRETS = ("LLMHOST_ADMIN_PASSWORD", "LLMHOST_VLLM_API_KEY", "HF_TOKEN")


@pytest.mark.parametrize("var", SECRETS)
def test_secrets_are_refused_in_one_line_or_written_byte_exact(probe, var):
    @BUDGET
    @given(TEXT.filter(bool))
    def check(value):
        if has_control(value):
            with pytest.raises(boundary.BoundaryError) as exc:
                boundary.env_value(value, f"${var} on the controller")
            msg = str(exc.value)
            assert f"${var}" in msg and "\n" not in msg and (len(value) < 6 or value not in msg)
            return
        text = boundary.env_file({"WEBUI_ADMIN_PASSWORD": value}, var)
        assert text.count("\n") == 1 and probe.unquote(text.split("=", 1)[1]) == value

    check()


@pytest.mark.parametrize("settings_", [
    {"openwebui_admin_email": "admin@home.arpa\\"}, {"openwebui_admin_email": "a\\dmin@home.arpa"},
    {"vllm_served_model_name": "llama%h $VLLM_API_KEY"}])
def test_a_backslash_or_specifier_never_swallows_the_next_line(probe, settings_):
    """Issue 27: a trailing backslash in the admin email joined the next env line (DEFAULT_MODELS='llama
    OFFLINE_MODE=true': Open WebUI went online); %h and $VLLM_API_KEY were expanded by systemd in the unit."""
    c = ctx(**settings_)
    env = env_of(probe, render("open-webui.env.j2", **openwebui_service.env_vars(c)))
    assert env["OFFLINE_MODE"] == "true" and env["HF_HUB_OFFLINE"] == "1"
    assert env["WEBUI_ADMIN_EMAIL"] == c.s.openwebui_admin_email and env["DEFAULT_MODELS"] == c.s.served_model_name
    argv = systemd_words(vllm_service.exec_start(c, "/opt/llmhost/vllm/current"))
    assert argv[argv.index("--served-model-name") + 1] == c.s.served_model_name
