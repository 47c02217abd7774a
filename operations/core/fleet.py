"""The fleet: which host plays which role, which vLLM hosts a UI host's router sends to, and the fleet-wide checks.

Pure logic (no pyinfra): preflight hands it every inventory host's name, groups, address and settings.

Roles come from the inventory's groups: a host in ``gpu_hosts`` serves vLLM, a host in ``ui_hosts`` serves Open WebUI
(and, when any of its backends is another host, the router in front of them); a host in neither group serves both,
alone (the one-box default of inventories/home.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from operations.core.settings import Settings

GPU_GROUP, UI_GROUP = "gpu_hosts", "ui_hosts"
LOOPBACK = ("127.0.0.1", "::1")


class FleetError(ValueError):
    """A fleet that cannot work as written: one line naming the hosts and the fix."""


@dataclass(frozen=True)
class Member:
    name: str
    groups: frozenset[str]
    address: str  # where the other hosts reach it: fleet_address, else its inventory address
    s: Settings

    @property
    def roles(self) -> frozenset[str]:
        return roles(self.groups)

    @property
    def in_fleet(self) -> bool:
        """In gpu_hosts or ui_hosts; a host in neither is a one-box deployment of its own (several may share an
        inventory, e.g. the test hosts of inventories/home.py) and talks to no other host."""
        return bool(self.groups & {GPU_GROUP, UI_GROUP})


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # the OpenAI API base the router uses, .../v1
    model: str  # served_model_name
    local: bool


def roles(groups) -> frozenset[str]:
    gpu, ui = GPU_GROUP in groups, UI_GROUP in groups
    if not gpu and not ui:
        return frozenset({"vllm", "webui"})
    return frozenset(({"vllm"} if gpu else set()) | ({"webui"} if ui else set()))


def _ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def check(members: list[Member]) -> None:
    """Refuse a fleet that cannot work, before any change on any host."""
    check_multinode(members)
    gpus = [m for m in members if m.in_fleet and "vllm" in m.roles and not m.s.headless]
    uis = [m for m in members if m.in_fleet and "webui" in m.roles]
    if uis and not gpus:
        raise FleetError(f"ui host(s) {', '.join(m.name for m in uis)} have no GPU host to send chats to: put at "
                         f"least one host in {GPU_GROUP}")
    seen: dict[str, str] = {}
    for m in gpus:
        if m.address in seen:
            raise FleetError(f"GPU hosts {seen[m.address]} and {m.name} are one host ({m.address}): list each GPU "
                             "host once")
        seen[m.address] = m.name
    by_model: dict[str, Member] = {}
    for m in gpus:
        first = by_model.setdefault(m.s.served_model_name, m)
        if (first.s.model_repo, first.s.model_revision) != (m.s.model_repo, m.s.model_revision):
            raise FleetError(f"{first.name} and {m.name} both serve {m.s.served_model_name!r} but with different "
                             f"models ({first.s.model_repo}@{first.s.model_revision[:12]} vs "
                             f"{m.s.model_repo}@{m.s.model_revision[:12]}): pin the same model_repo and "
                             "model_revision, or give them different vllm_served_model_name")
    for ui in uis:
        remote = [g for g in gpus if g.name != ui.name]
        for g in remote:
            if g.s.vllm_host in LOOPBACK:
                raise FleetError(f"{g.name} serves vLLM to {ui.name} but vllm_host={g.s.vllm_host}: set vllm_host "
                                 "(or fleet_address) to its address on the fleet's network")
            if not g.s.vllm_api_key_env or g.s.vllm_api_key_env != ui.s.vllm_api_key_env:
                raise FleetError(f"{g.name} serves vLLM to {ui.name}: give both the same vllm_api_key_env (the "
                                 "controller's variable holding the fleet's key, e.g. LLMHOST_VLLM_API_KEY; "
                                 "export LLMHOST_VLLM_API_KEY=$(openssl rand -hex 32))")
            if not _ip(ui.address):
                raise FleetError(f"{ui.name}: the GPU hosts' firewall admits addresses, and {ui.address!r} is not "
                                 "one: set fleet_address to its IP address on the fleet's network")


SAME_ON_EVERY_NODE = ("model_repo", "model_revision", "vllm_version", "install_root", "data_root",
                      "vllm_tensor_parallel_size", "vllm_master_port", "vllm_served_model_name")


def check_multinode(members: list[Member]) -> None:
    """One model across boxes: the ranks 0..n-1 each once, rank 0 at the master address, the same venv, model path and
    pins on every node, and the nodes' traffic on a private network."""
    nodes: dict[str, list[Member]] = {}
    for m in members:
        if "vllm" in m.roles and m.s.vllm_nnodes > 1:
            if not m.s.vllm_master_addr:
                raise FleetError(f"{m.name}: vllm_nnodes={m.s.vllm_nnodes} needs vllm_master_addr (rank 0's "
                                 "fleet_address)")
            nodes.setdefault(m.s.vllm_master_addr, []).append(m)
    for master, group in nodes.items():
        names = ", ".join(m.name for m in group)
        n = group[0].s.vllm_nnodes
        ranks = sorted(m.s.vllm_node_rank for m in group)
        if any(m.s.vllm_nnodes != n for m in group) or ranks != list(range(n)):
            raise FleetError(f"multi-node model at {master} ({names}): ranks {ranks} for vllm_nnodes="
                             f"{[m.s.vllm_nnodes for m in group]}: give the n hosts the ranks 0..n-1, once each")
        rank0 = next(m for m in group if m.s.vllm_node_rank == 0)
        if rank0.address != master:
            raise FleetError(f"multi-node model at {master}: rank 0 ({rank0.name}) has the address {rank0.address}: "
                             "set vllm_master_addr to rank 0's fleet_address")
        for key in SAME_ON_EVERY_NODE:
            values = {m.name: getattr(m.s, key) for m in group}
            if len(set(map(str, values.values()))) > 1:
                raise FleetError(f"multi-node model at {master}: {key} differs between the nodes ({values}): every "
                                 "node needs the same venv, model path and pins")
        for m in group:
            if not _ip(m.address) or not ipaddress.ip_address(m.address).is_private:
                raise FleetError(f"multi-node model at {master}: {m.name}'s address {m.address!r} is not a private "
                                 "network address: the nodes' traffic (NCCL, unencrypted) belongs on a private network; "
                                 "set fleet_address")


def backends(ui: Member, members: list[Member]) -> list[Backend]:
    """The vLLM hosts a UI host sends to (itself first when it serves vLLM too), sorted by name after that."""
    out = []
    fleet = [m for m in members if m.in_fleet and "vllm" in m.roles and not m.s.headless] if ui.in_fleet else [ui]
    for g in sorted(fleet, key=lambda m: (m.name != ui.name, m.name)):
        local = g.name == ui.name
        address = ("127.0.0.1" if g.s.vllm_host in ("0.0.0.0", "::") else g.s.vllm_host) if local else (
            g.address if g.s.vllm_host in ("0.0.0.0", "::") else g.s.vllm_host)
        out.append(Backend(g.name, f"http://{address}:{g.s.vllm_port}/v1", g.s.served_model_name, local))
    return out


def clients(gpu: Member, members: list[Member]) -> list[str]:
    """Addresses of the other hosts whose UI sends to this GPU host: the only ones its firewall admits to vLLM."""
    if "vllm" not in gpu.roles or not gpu.in_fleet or gpu.s.headless:
        return []
    return sorted({m.address for m in members if m.in_fleet and "webui" in m.roles and m.name != gpu.name})
