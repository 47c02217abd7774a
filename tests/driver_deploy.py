"""The deploy's first steps only (preflight, downloads, NVIDIA driver): what the driver-lifecycle real tier runs
against the stand-in archive (tests/test_realhost_driver.py). The components are the product's own."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from operations import download_proxy, nvidia_driver, preflight  # noqa: E402

ctx = preflight.check()
download_proxy.ensure(ctx)
nvidia_driver.ensure(ctx)
