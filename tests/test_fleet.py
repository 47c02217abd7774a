"""Issue 11 (fast tier): roles from the inventory's groups, the fleet-wide refusals, and who talks to whom."""

import pytest

from operations.core.fleet import Backend, FleetError, Member, backends, check, clients, roles
from operations.core.settings import Settings

REV_A, REV_B = "a" * 40, "b" * 40
KEY = {"vllm_api_key_env": "LLMHOST_VLLM_API_KEY"}


def gpu(name, address, **s):
    return Member(name, frozenset({"gpu_hosts"}), address,
                  Settings(gpu_card="rtx-3060-12gb", **{**KEY, "vllm_host": address, **s}))


def ui(name, address, **s):
    return Member(name, frozenset({"ui_hosts"}), address, Settings(gpu_host=False, **{**KEY, **s}))


def test_roles_come_from_the_groups_and_a_host_in_neither_serves_both():
    assert roles([]) == {"vllm", "webui"}  # inventories/home.py: one box
    assert roles(["gpu_hosts"]) == {"vllm"}
    assert roles(["ui_hosts"]) == {"webui"}
    assert roles(["gpu_hosts", "ui_hosts", "rack-2"]) == {"vllm", "webui"}


def test_two_gpu_hosts_behind_one_ui_host():
    fleet = [gpu("gpu1", "10.214.0.2"), gpu("gpu2", "10.214.0.3"), ui("ui", "10.214.0.4")]
    check(fleet)
    assert backends(fleet[2], fleet) == [
        Backend("gpu1", "http://10.214.0.2:8000/v1", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", False),
        Backend("gpu2", "http://10.214.0.3:8000/v1", "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", False)]
    assert clients(fleet[0], fleet) == ["10.214.0.4"]  # the only address gpu1's firewall admits to vLLM
    assert clients(fleet[2], fleet) == []


def test_a_ui_host_that_is_also_a_gpu_host_reaches_itself_on_loopback():
    both = Member("box", frozenset({"gpu_hosts", "ui_hosts"}), "10.214.0.2",
                  Settings(gpu_card="rtx-3060-12gb", vllm_host="10.214.0.2", **KEY))
    fleet = [both, gpu("gpu2", "10.214.0.3")]
    check(fleet)
    assert [(b.name, b.url, b.local) for b in backends(both, fleet)] == [
        ("box", "http://10.214.0.2:8000/v1", True), ("gpu2", "http://10.214.0.3:8000/v1", False)]
    assert clients(fleet[1], fleet) == ["10.214.0.2"]


def test_one_box_is_not_a_fleet_and_needs_no_key():
    box = Member("home", frozenset(), "192.168.1.50", Settings(gpu_card="rtx-3060-12gb"))
    check([box])
    assert [(b.url, b.local) for b in backends(box, [box])] == [("http://127.0.0.1:8000/v1", True)]
    assert clients(box, [box]) == []


@pytest.mark.parametrize("fleet,message", [
    ([ui("ui", "10.214.0.4")], "ui host(s) ui have no GPU host to send chats to: put at least one host in gpu_hosts"),
    ([gpu("gpu1", "10.214.0.2"), gpu("gpu1-again", "10.214.0.2"), ui("ui", "10.214.0.4")],
     "GPU hosts gpu1 and gpu1-again are one host (10.214.0.2): list each GPU host once"),
    ([gpu("gpu1", "10.214.0.2"), gpu("gpu2", "10.214.0.3", model_revision=REV_B), ui("ui", "10.214.0.4")],
     "gpu1 and gpu2 both serve 'hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4' but with different models"),
    ([gpu("gpu1", "10.214.0.2", vllm_host="127.0.0.1"), ui("ui", "10.214.0.4")],
     "gpu1 serves vLLM to ui but vllm_host=127.0.0.1"),
    ([gpu("gpu1", "10.214.0.2", vllm_api_key_env=None), ui("ui", "10.214.0.4")],
     "gpu1 serves vLLM to ui: give both the same vllm_api_key_env"),
    ([gpu("gpu1", "10.214.0.2"), ui("ui", "ui.lan")], "ui: the GPU hosts' firewall admits addresses"),
], ids=["ui-without-gpu", "gpu-twice", "one-name-two-models", "loopback-backend", "no-key", "ui-not-an-ip"])
def test_fleets_that_cannot_work_are_refused_naming_the_hosts(fleet, message):
    with pytest.raises(FleetError) as exc:
        check(fleet)
    assert message in str(exc.value)


def test_different_names_may_serve_different_models():
    fleet = [gpu("gpu1", "10.214.0.2"), gpu("gpu2", "10.214.0.3", model_revision=REV_A,
                                                vllm_served_model_name="other"), ui("ui", "10.214.0.4")]
    check(fleet)
    assert {b.model for b in backends(fleet[2], fleet)} == {"hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "other"}


def test_hosts_in_no_group_are_separate_one_box_deployments():
    """inventories/home.py with two test hosts: two boxes, each with its own vLLM on loopback, no router, no rules."""
    a = Member("10.213.1.2", frozenset(), "10.213.1.2", Settings(gpu_card="rtx-3060-12gb"))
    b = Member("10.213.2.2", frozenset(), "10.213.2.2", Settings(gpu_card="rtx-3060-12gb"))
    check([a, b])
    for box in (a, b):
        assert [(x.name, x.url, x.local) for x in backends(box, [a, b])] == [
            (box.name, "http://127.0.0.1:8000/v1", True)]
        assert clients(box, [a, b]) == []


def node(name, address, rank, n=2, **s):
    return gpu(name, address, vllm_nnodes=n, vllm_node_rank=rank, vllm_master_addr="10.214.0.2", **s)


def test_one_model_over_two_boxes_rank_0_serves_the_others_run_headless():
    fleet = [node("gpu1", "10.214.0.2", 0), node("gpu2", "10.214.0.3", 1), ui("ui", "10.214.0.4")]
    check(fleet)
    assert [b.name for b in backends(fleet[2], fleet)] == ["gpu1"]  # the headless stage serves no API
    assert clients(fleet[1], fleet) == [] and clients(fleet[0], fleet) == ["10.214.0.4"]
    from operations.vllm_service import multinode_args

    assert multinode_args(fleet[0].s) == ["--distributed-executor-backend=mp", "--nnodes=2", "--node-rank=0",
                                          "--master-addr=10.214.0.2", "--master-port=29501"]
    assert multinode_args(fleet[1].s)[-2:] == ["--master-port=29501", "--headless"]
    assert multinode_args(Settings(gpu_card="rtx-3060-12gb")) == []


@pytest.mark.parametrize("fleet,message", [
    ([node("gpu1", "10.214.0.2", 0), node("gpu2", "10.214.0.3", 0), ui("ui", "10.214.0.4")],
     "ranks [0, 0] for vllm_nnodes=[2, 2]: give the n hosts the ranks 0..n-1, once each"),
    ([node("gpu1", "10.214.0.2", 0), ui("ui", "10.214.0.4")], "ranks [0] for vllm_nnodes=[2]"),
    ([node("gpu1", "10.214.0.9", 0), node("gpu2", "10.214.0.3", 1), ui("ui", "10.214.0.4")],
     "rank 0 (gpu1) has the address 10.214.0.9: set vllm_master_addr to rank 0's fleet_address"),
    ([node("gpu1", "10.214.0.2", 0), node("gpu2", "10.214.0.3", 1, install_root="/opt/other"), ui("ui", "10.214.0.4")],
     "install_root differs between the nodes"),
    ([node("gpu1", "10.214.0.2", 0), node("gpu2", "10.214.0.3", 1, vllm_version="0.6.3.post1"),
      ui("ui", "10.214.0.4")], "vllm_version differs between the nodes"),
    ([gpu("gpu1", "10.214.0.2", vllm_nnodes=2), ui("ui", "10.214.0.4")], "vllm_nnodes=2 needs vllm_master_addr"),
], ids=["rank-twice", "rank-missing", "master-not-rank-0", "other-venv", "other-vllm", "no-master"])
def test_multinode_models_that_cannot_form_are_refused(fleet, message):
    with pytest.raises(FleetError) as exc:
        check(fleet)
    assert message in str(exc.value)


def test_multinode_traffic_must_stay_on_a_private_network():
    rank0 = Member("gpu1", frozenset({"gpu_hosts"}), "8.8.8.8", Settings(
        gpu_card="rtx-3060-12gb", vllm_host="8.8.8.8", vllm_nnodes=2, vllm_node_rank=0, vllm_master_addr="8.8.8.8",
        **KEY))
    rank1 = gpu("gpu2", "10.214.0.3", vllm_nnodes=2, vllm_node_rank=1, vllm_master_addr="8.8.8.8")
    with pytest.raises(FleetError) as exc:
        check([rank0, rank1, ui("ui", "10.214.0.4")])
    assert "gpu1's address '8.8.8.8' is not a private network address" in str(exc.value)


def test_each_stage_is_planned_with_its_share_of_the_layers():
    from operations.core.tuning import GpuSpec, ModelSpec, plan
    from tests.test_eras import GPTQ_CFG, GPTQ_Q

    model = ModelSpec.from_config(GPTQ_CFG, GPTQ_Q)
    one = plan(model, GpuSpec.from_card("rtx-3060-12gb"), "0.26.0")
    two = plan(model, GpuSpec.from_card("rtx-3060-12gb"), "0.26.0", pipeline_parallel_size=2)
    assert "--pipeline-parallel-size=2" in two.flags and "--pipeline-parallel-size" not in " ".join(one.flags)
    assert two.weights_gib < one.weights_gib and two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    assert any("not measured" in w for w in two.warnings)
