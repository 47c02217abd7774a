"""The disposable test-host harness: the Debian 12 systemd-nspawn host, the local model hub, the named stand-ins.

Used by the real tier, `make deploy` without LLMHOST_HOST, and tools/bench.py; not part of the product."""
