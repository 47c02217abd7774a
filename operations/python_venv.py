"""A Python venv at exactly the wanted requirements, switched in atomically (blue/green).

Each requirement set gets its own directory ``<root>/venvs/<hash>``; ``<root>/current`` is a symlink to the one in
service. A new set is built beside the old one and the link moves only after the install succeeded, so a failed
pip install leaves the previous venv serving, and rolling back is moving the link back.
"""

from __future__ import annotations

import hashlib

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import File, Link

from operations.core.boundary import shell_all, shell_line
from operations.shared_ops import ShownCommand, with_progress



def venv_id(python: str, requirements: list[str], index_url: str | None, find_links: list[str]) -> str:
    """Stable id of a requirement set: the venv's directory name."""
    text = "\n".join([f"python={python}", f"index={index_url or ''}", *sorted(find_links), *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def target(root: str, python: str, requirements: list[str], index_url: str | None = None,
           find_links: list[str] | None = None, extra_args: list[str] | tuple[str, ...] = ()) -> str:
    """The directory ``venv`` builds for these arguments (``<root>/venvs/<id>``)."""
    return f"{root}/venvs/{venv_id(python, requirements + [' '.join(extra_args)], index_url, find_links or [])}"


@operation()
def venv(root: str, python: str, requirements: list[str], uv: str, owner: str = "root",
         index_url: str | None = None, find_links: list[str] | None = None, env: dict[str, str] | None = None,
         extra_args: list[str] | tuple[str, ...] = ()):
    """Ensure ``<root>/current`` is a complete venv with exactly ``requirements``.

    + root: directory holding ``venvs/`` and the ``current`` link
    + python: interpreter version ('3.11'); uv finds it on the host or fetches a managed one
    + requirements: pinned requirement lines
    + uv: path of the uv binary on the host
    + owner: owner of the venv files (read-only for the service user is enough; root by default)
    + index_url / find_links: where packages come from
    + env: extra environment for the install (proxy, CA bundle)
    + extra_args: more ``uv pip install`` arguments, one list item each (e.g. ``['--exclude-newer', DATE]``); part
      of the venv's id
    """
    find_links = find_links or []
    wanted = target(root, python, requirements, index_url, find_links, extra_args)
    vid = wanted.rsplit("/", 1)[1]
    link = host.get_fact(Link, path=f"{root}/current")
    current = link.get("link_target", "") if link else ""
    complete = host.get_fact(File, path=f"{wanted}/.llmhost-complete")

    if current == wanted and complete:
        host.noop(f"{root}/current is {vid} with the pinned requirements")
        return

    link = shell_all(["ln", "-sfn", wanted, f"{root}/current.new"],
                     ["mv", "-T", f"{root}/current.new", f"{root}/current"])
    if complete:
        yield link  # built before (a rollback or a return to an earlier pin): only switch
        return

    uv_env = ["env", *(f"{k}={v}" for k, v in sorted((env or {}).items())), uv]  # every value one argument
    pip_opts = (["--index-url", index_url] if index_url else []) + [a for f in find_links for a in ("--find-links", f)]
    reqs = f"{wanted}.requirements.txt"
    yield " && ".join([shell_line(["mkdir", "-p", f"{root}/venvs"]), shell_line(["rm", "-rf", wanted]),
                       shell_line(["printf", "%s\\n", *requirements]) + " > " + shell_line([reqs])])
    install = shell_all([*uv_env, "venv", "--quiet", "--python", python, wanted],
                        [*uv_env, "pip", "install", "--quiet", "--python", f"{wanted}/bin/python", *pip_opts,
                         *extra_args, "-r", reqs], ["touch", f"{wanted}/.llmhost-complete"])
    # uv shows no progress without a terminal: the monitor prints how much its cache grew
    yield ShownCommand(with_progress(install, f"venv {root}", f"$({shell_line([*uv_env, 'cache', 'dir'])})"))
    if owner != "root":
        yield shell_all(["chown", "-R", f"root:{owner}", wanted], ["chmod", "-R", "g+rX,o-w", wanted])
    yield link
