"""Record llmhost's custom facts on a real host: the raw command output and the parsed value of each.

    python3 tools/gpu_facts.py OUTDIR

Writes OUTDIR/<Fact>.txt (raw output, serials and UUIDs anonymised) and prints one JSON line per fact. Used on the
real Ubuntu GPU host (issue 5); tests/fixtures/gpu-host/ keeps what it recorded, and the fact tests parse those.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operations import facts  # noqa: E402

ANON = [(re.compile(r"GPU-[0-9a-f-]{36}"), "GPU-00000000-0000-0000-0000-000000000000"),
        (re.compile(r"(?i)serial[^\n]*"), "serial: ANONYMISED")]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cases = [(facts.NvidiaSmi, {}), (facts.PciNvidiaGpus, {}), (facts.NvidiaKernelModule, {}),
             (facts.SecureBoot, {}), (facts.AptHolds, {}), (facts.PythonVersions, {}), (facts.MemTotalMib, {}),
             (facts.DiskFreeMib, {"path": "/var/lib/llmhost"})]
    for cls, kw in cases:
        fact = cls()
        command = fact.command(**kw)
        raw = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
        for pattern, repl in ANON:
            raw = pattern.sub(repl, raw)
        (out / f"{cls.__name__}.txt").write_text(raw)
        lines = raw.splitlines()
        value = fact.process(lines) if lines else cls.default()
        print(json.dumps({"fact": cls.__name__, "args": kw, "command": command, "output": raw, "value": value}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
