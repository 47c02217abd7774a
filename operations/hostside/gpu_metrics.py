#!/usr/bin/python3
# Managed by llmhost: the GPU's numbers for node-exporter's textfile collector (run by llmhost-gpu-metrics.timer;
# operations/hostside/gpu_metrics.py, its values in llmhost-gpu-metrics.json beside it).
# Writes TEXTFILE_DIR/llmhost_gpu.prom atomically; llmhost_gpu_up 0 when nvidia-smi sees no GPU.
# Also the driver set: llmhost_nvidia_driver_mismatch 1 when the loaded module is not the installed user space's
# version (NVML's "Driver/library version mismatch"), llmhost_nvidia_boot_kernel_module{kernel} 0 when the kernel
# that boots next (the newest /boot/vmlinuz-*) has no nvidia module.
import glob
import json
import os
import re
import subprocess

with open(os.path.realpath(__file__) + ".json", encoding="utf-8") as _fh:  # the values the deploy wrote beside it
    CONFIG = json.load(_fh)

QUERY = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"
METRICS = [("utilization_percent", 2), ("memory_used_mib", 3), ("memory_total_mib", 4),
           ("temperature_celsius", 5), ("power_watts", 6)]
OUT = CONFIG["textfile_dir"] + "/llmhost_gpu.prom"
ROOT = os.environ.get("LLMHOST_METRICS_ROOT", "")  # tests only: a directory standing for / (the unit sets none)


def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def driver_lines():
    lines = []
    try:
        with open(ROOT + "/proc/driver/nvidia/version") as f:
            m = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", f.readline() + " ")
        loaded = m.group(1) if m else ""
    except OSError:
        loaded = ""
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", f"nvidia-utils-{int(CONFIG['branch'])}-server"],
                               capture_output=True, text=True).stdout.strip().split("-")[0]
    lines.append(f"llmhost_nvidia_driver_mismatch {1 if loaded and installed and loaded != installed else 0}")
    boot = sh(f"ls {ROOT}/boot 2>/dev/null | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1")
    if boot:
        has = bool(glob.glob(f"{ROOT}/lib/modules/{boot}/**/nvidia.ko*", recursive=True))
        lines.append('llmhost_nvidia_boot_kernel_module{kernel="' + boot + '"} ' + str(int(has)))
    return lines


def main():
    lines = driver_lines()
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        rows = [[c.strip() for c in r.split(",")] for r in smi.stdout.splitlines() if r.strip()] if smi.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        rows = []
    lines.append(f"llmhost_gpu_up {1 if rows else 0}")
    for r in rows:
        if len(r) < 7:
            continue
        labels = f'gpu="{r[0]}",name="{r[1]}"'
        for name, i in METRICS:
            try:
                lines.append("llmhost_gpu_" + name + "{" + labels + "} " + str(float(r[i])))
            except ValueError:  # "[N/A]" on cards that do not report it
                pass
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, OUT)


if __name__ == "__main__":
    main()
