"""The yardstick for `make bench`: a one-operation pyinfra deploy that changes nothing (pyinfra's own floor)."""

from pyinfra.operations import files

files.directory(name="Trivial: /tmp exists", path="/tmp", present=True)
