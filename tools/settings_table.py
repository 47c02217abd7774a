"""Rewrite the settings table in the docs from operations/core/settings.py (the test checks the two agree)."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from operations.core.settings import markdown_table  # noqa: E402

path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/settings.md")
text = path.read_text()
new = re.sub(r"\| setting \| default \| meaning \|\n(\|.*\|\n)+", lambda m: markdown_table() + "\n", text, count=1)
path.write_text(new)
