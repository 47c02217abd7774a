"""pyinfra-testing JSON fixtures: every custom fact (real outputs recorded on the H200 host + other cases) and
every custom operation (a changing case and a noop case each)."""

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests
from pyinfra_testing.operations import make_operation_tests

FIX = Path(__file__).parent / "fixtures" / "pyinfra"

for _dir in sorted((FIX / "facts").iterdir()):  # "<module>.<Fact>", or "<Fact>" of operations/facts.py
    _key = _dir.name if "." in _dir.name else f"facts.{_dir.name}"
    globals()[f"TestFact{_dir.name.replace('.', '_')}"] = make_fact_tests("operations", _key, _dir)

for _dir in sorted((FIX / "ops").iterdir()):
    _module, _op = _dir.name.rsplit(".", 1)
    globals()[f"TestOp_{_module}_{_op}"] = make_operation_tests("operations", _dir.name, _dir)


def test_reboot_only_when_the_loaded_module_or_the_boot_kernel_differs():
    from types import SimpleNamespace

    from pyinfra.context import ctx_host, ctx_state
    from pyinfra_testing.util import FakeState, create_host

    from operations.nvidia_driver import loaded_module_differs

    state = FakeState()
    host = create_host(state, facts={"facts.DpkgVersion": {
        "package=nvidia-utils-580-server": "580.95.05-0ubuntu0.24.04.2"}})
    with ctx_state.use(state), ctx_host.use(host):
        def differs(loaded: dict, boot: str = "6.8.0-50-generic", flavour: str = "open", pins=None,
                    driver: str = "") -> bool:
            ctx = SimpleNamespace(module=loaded, running_kernel="6.8.0-50-generic", flavour=flavour,
                                  driver_set=SimpleNamespace(boot=boot, pins=pins or {}, driver=driver))
            return loaded_module_differs(ctx, "nvidia-utils-580-server")()

        assert differs({"version": "580.95.05"}) is False
        assert differs({"version": "570.172.08"}) is True
        assert differs({}) is True
        # the set moved to a new kernel at the same driver: its module loads only after a reboot into it
        assert differs({"version": "580.95.05"}, boot="6.8.0-51-generic") is True
        # issue 26: the open module loaded, the proprietary one wanted at the same version; a set moving the driver
        assert differs({"version": "580.95.05", "flavour": "open"}, flavour="proprietary") is True
        assert differs({"version": "580.95.05", "flavour": "open"}) is False
        assert differs({"version": "580.95.05"}, pins={"x": "1"}, driver="595.58.03") is True
