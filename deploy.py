"""llmhost: a bare Ubuntu GPU box to vLLM + Open WebUI under systemd.

    pyinfra inventories/home.py deploy.py            # apply
    pyinfra inventories/home.py deploy.py --dry --diff   # show what would change

deploy.py only composes the components, in the order of the product: downloads (proxy, CA), base (users,
directories, tools, probe), NVIDIA driver, CUDA, container toolkit, weights, vLLM, vLLM's firewall (fleets), the
router (fleets), Open WebUI, HTTPS (opt-in), metrics (opt-in), verify. Preflight validates every setting, the fleet, and plans vLLM's flags before any
change; each host plays the roles its inventory groups give it (operations/core/fleet.py).
"""

from operations import (base, container_toolkit, cuda_toolkit, download_proxy, model_weights, nvidia_driver,
                        https_proxy, metrics, openwebui_service, preflight, router_service, verify,
                        vllm_firewall, vllm_service)

ctx = preflight.check()
download_proxy.ensure(ctx)
base.ensure(ctx)
nvidia_driver.ensure(ctx)
cuda_toolkit.ensure(ctx)
container_toolkit.ensure(ctx)
weights = model_weights.ensure(ctx)
vllm_changes = vllm_service.ensure(ctx, weights=weights)
vllm_firewall.ensure(ctx)
router_changes = router_service.ensure(ctx)
webui = openwebui_service.ensure(ctx)
https_proxy.ensure(ctx)
metrics.ensure(ctx)
verify.ensure(ctx, changes=vllm_changes + router_changes + webui.changes, new_admin=webui.admin)
