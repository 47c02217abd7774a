"""The yardstick for `make bench`: a one-operation pyinfra deploy that changes nothing (pyinfra's own floor).

LLMHOST_BENCH_NODELAY=1 gives it the same SSH socket option as llmhost's preflight (TCP_NODELAY), the floor with the
same transport; unset, it is stock pyinfra.
"""

import os

from pyinfra import host
from pyinfra.operations import files

if os.environ.get("LLMHOST_BENCH_NODELAY") == "1":
    from operations.preflight import no_nagle

    no_nagle(host.connector)
files.directory(name="Trivial: /tmp exists", path="/tmp", present=True)
