"""Metrics and alerts (opt-in, ``metrics_enabled``): node-exporter on every host, the GPU's numbers from nvidia-smi
through its textfile collector on a timer (GPU hosts), and Prometheus with llmhost's alert rules on the host that
serves Open WebUI (the one box by default). The distribution's packages; every listener on loopback; a config that
promtool rejects never replaces the running one."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from operations.context import Context
from operations.render import rendered
from operations.shared_ops import host_program, skipped

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
NODE_ARGS = f'ARGS="--web.listen-address=127.0.0.1:9100 --collector.textfile.directory={TEXTFILE_DIR}"\n'


def prometheus_args(ctx: Context) -> str:
    return (f'ARGS="--web.listen-address=127.0.0.1:9090 --storage.tsdb.retention.time={ctx.s.metrics_retention}"\n')


def prometheus_vars(ctx: Context) -> dict:
    s = ctx.s
    return dict(vllm_target=f"{ctx.connect(s.vllm_host)}:{s.vllm_port}" if ctx.serves_vllm else None)


def alert_vars(ctx: Context) -> dict:
    return dict(gpu_temp_c=ctx.s.metrics_gpu_temp_alert_c)


@deploy("Metrics")
def ensure(ctx: Context):
    s = ctx.s
    if not s.metrics_enabled:
        skipped(name="Metrics (skipped: metrics_enabled=False)", reason="metrics are opt-in: set metrics_enabled")
        return
    apt.packages(name="node-exporter (the distribution's package)", packages=["prometheus-node-exporter"],
                 no_recommends=True, update=True, cache_time=86400, _env=ctx.download_env)
    node_args = files.put(create_remote_dir=False, name="node-exporter on loopback, with the textfile collector",
                          src=StringIO(f"# Managed by llmhost\n{NODE_ARGS}"),
                          dest="/etc/default/prometheus-node-exporter", mode="644")
    systemd.service(name="node-exporter restarted (only when its arguments changed)",
                    service="prometheus-node-exporter.service", running=True, restarted=True, _if=node_args.did_change)
    systemd.service(name="node-exporter running and enabled", service="prometheus-node-exporter.service",
                    running=True, enabled=True)
    if ctx.serves_vllm and s.gpu_host:
        script = f"{s.install_root}/bin/llmhost-gpu-metrics"
        host_program("GPU sampler (nvidia-smi -> textfile)", "gpu_metrics", script,
                     dict(textfile_dir=TEXTFILE_DIR, branch=s.nvidia_driver_branch))
        units = [files.put(create_remote_dir=False, name=unit,
                           src=rendered(f"{unit}.j2", script=script, textfile_dir=TEXTFILE_DIR),
                           dest=f"/etc/systemd/system/{unit}", mode="644")
                 for unit in ("llmhost-gpu-metrics.service", "llmhost-gpu-metrics.timer")]
        systemd.daemon_reload(name="Reload systemd (GPU sampler units changed)", _if=any_changed(*units))
        systemd.service(name="GPU sampler timer running and enabled", service="llmhost-gpu-metrics.timer",
                        running=True, enabled=True)
    else:
        skipped(name="GPU sampler (skipped: no GPU here)", reason="this host has no GPU to sample")
    if not ctx.serves_webui:
        skipped(name="Prometheus (skipped: it runs on the UI host)", reason="Prometheus runs where Open WebUI runs")
        return
    apt.packages(name="Prometheus (the distribution's package)", packages=["prometheus"], no_recommends=True,
                 update=True, cache_time=86400, _env=ctx.download_env)
    changes = [
        files.put(create_remote_dir=False, name=f"Prometheus on loopback, retention {s.metrics_retention}",
                  src=StringIO(f"# Managed by llmhost\n{prometheus_args(ctx)}"), dest="/etc/default/prometheus",
                  mode="644"),
        files.put(create_remote_dir=False, name="Prometheus scrape config",
                  src=rendered("prometheus.yml.j2", **prometheus_vars(ctx)),
                  dest="/etc/prometheus/prometheus.yml", mode="644"),
        files.put(create_remote_dir=False, name="Alert rules",
                  src=rendered("llmhost-alerts.yml.j2", **alert_vars(ctx)),
                  dest="/etc/prometheus/llmhost-alerts.yml", mode="644"),
    ]
    server.shell(name="promtool accepts the config and the rules (else the running Prometheus is kept)",
                 commands=["promtool check config /etc/prometheus/prometheus.yml"], _if=any_changed(*changes))
    systemd.service(name="Prometheus restarted (only when its arguments, config or rules changed)",
                    service="prometheus.service", running=True, restarted=True, _if=any_changed(*changes))
    systemd.service(name="Prometheus running and enabled", service="prometheus.service", running=True, enabled=True)
