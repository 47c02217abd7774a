"""The deploy's first steps only (preflight, downloads, NVIDIA driver): what the driver-lifecycle real tier runs
against the stand-in archive (tests/test_realhost_driver.py). The components are the product's own."""

from operations import download_proxy, nvidia_driver, preflight

ctx = preflight.check()
download_proxy.ensure(ctx)
nvidia_driver.ensure(ctx)
