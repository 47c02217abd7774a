"""pyinfra-testing JSON fixtures: every custom fact (real outputs recorded on the H200 host + other cases) and
every custom operation (a changing case and a noop case each)."""

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests
from pyinfra_testing.operations import make_operation_tests

FIX = Path(__file__).parent / "fixtures" / "pyinfra"

for _dir in sorted((FIX / "facts").iterdir()):
    globals()[f"TestFact{_dir.name}"] = make_fact_tests("operations", f"facts.{_dir.name}", _dir)

for _dir in sorted((FIX / "ops").iterdir()):
    _module, _op = _dir.name.rsplit(".", 1)
    globals()[f"TestOp_{_module}_{_op}"] = make_operation_tests("operations", _dir.name, _dir)


def test_every_custom_operation_has_a_changing_and_a_noop_case():
    import json

    for d in (FIX / "ops").iterdir():
        cases = [json.loads(f.read_text()) for f in d.glob("*.json")]
        assert any(not c["commands"] and c.get("noop_description") for c in cases), d.name
        if d.name != "preflight.skipped":  # a skipped step never changes anything, by design
            assert any(c["commands"] for c in cases), d.name
