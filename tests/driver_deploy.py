"""The deploy's GPU-stack steps only (preflight, downloads, NVIDIA driver, CUDA, container toolkit): what the
driver-lifecycle real tier runs against the stand-in archive (tests/test_realhost_driver.py). The components are
the product's own."""

from operations import container_toolkit, cuda_toolkit, download_proxy, nvidia_driver, preflight

ctx = preflight.check()
download_proxy.ensure(ctx)
nvidia_driver.ensure(ctx)
cuda_toolkit.ensure(ctx)
container_toolkit.ensure(ctx)
