#!/usr/bin/env bash
# The GPU host side of the vLLM proof (issue 10). Called through the device tool, one step per call:
#   stage DIR   copy one carried piece (.dev/pN: dependency wheels or a part of the stripped vLLM 0.26.0 wheel) to /tmp
#               (tools/gpu_pieces.sh builds .dev/p1..p6 here; carry one per call: the tree travels with <= 64 MiB)
#   calib       unpack them, tools/gpu_weights_probe.py, then the planner's own plans (issue 17)
#   start       unpack into /tmp/site, record host facts and `--help`, start tools/gpu_vllm_proof.py detached
#   poll SECS   wait, then hand back /tmp/res as one tarball
# The machine keeps /tmp only while it stays warm (30 s between calls).
set -u
OUT=${OUT:-/tmp/out}

unpack() {  # the staged pieces into /tmp/site: dependency wheels, then the stripped vLLM tar (zstandard from the wheels)
  mkdir -p /tmp/site /tmp/res
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/stage/*.whl
  cat /tmp/stage/vllm.tzst.* | PYTHONPATH=/tmp/site python3 -c "import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(sys.stdin.buffer, sys.stdout.buffer)" | tar xf - -C /tmp/site
}

case "$1" in
lockstage)  # issue 17: one piece of the era's lock (wheels, or parts of a wheel over 58 MB) per call
  mkdir -p /tmp/stage && cp "$2"/* /tmp/stage/ && ls /tmp/stage | wc -l && du -sh /tmp/stage ;;
replay)  # join split wheels, then tools/gpu_replay.py detached (the venv from the lock, the unit's environment)
  set -e
  cd /tmp/stage
  if ls part.* >/dev/null 2>&1; then cat part.* | tar xf - && rm part.*; fi  # issue 28: one tar split in pieces
  for first in *.part00; do [ -e "$first" ] || break; w=${first%.part00}; cat "$w".part* > "$w" && rm "$w".part*; done
  ls *.whl | wc -l
  cd - >/dev/null
  mkdir -p /tmp/res
  rm -rf /tmp/repo && cp -r . /tmp/repo && cd /tmp/repo
  { uname -r; nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.__file__)"; } > /tmp/res/host.txt 2>&1
  setsid nohup python3 tools/gpu_replay.py > /tmp/res/runner.log 2>&1 < /dev/null &
  sleep 20; tail -5 /tmp/res/runner.log ;;
stage)
  mkdir -p /tmp/stage && cp "$2"/* /tmp/stage/ && ls -la /tmp/stage | tail -n +2 | wc -l && du -sh /tmp/stage ;;
start)
  set -e
  unpack
  export PYTHONPATH=/tmp/site
  set +e
  { uname -r; cat /etc/os-release; nvidia-smi; python3 -c "import torch, vllm, transformers; print(torch.__version__, vllm.__version__, transformers.__version__)"; } > /tmp/res/host.txt 2>&1
  { echo '$ uname -r'; uname -r; echo '$ dpkg-query -W linux-image-* linux-modules-nvidia-* linux-generic* linux-headers-generic*'
    dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\n' 'linux-image-*' 'linux-modules-nvidia-*' 'linux-generic*' 'linux-headers-generic*' 2>&1
    echo '$ modinfo -k $(uname -r) -F version nvidia'; modinfo -k "$(uname -r)" -F version nvidia 2>&1; echo "exit=$?"
    echo '$ ls /lib/modules'; ls /lib/modules 2>&1; echo '$ cat /proc/driver/nvidia/version'; cat /proc/driver/nvidia/version 2>&1; } > /tmp/res/kernel-facts.txt 2>&1
  python3 -m vllm.entrypoints.openai.api_server --help=all > /tmp/res/vllm-0.26.0-api-server-help.txt 2>&1 || python3 -m vllm.entrypoints.openai.api_server --help > /tmp/res/vllm-0.26.0-api-server-help.txt 2>&1 || true
  mkdir -p /opt/llmhost/vllm/current/bin
  printf '#!/bin/sh\n# stand-in for the venv: the host python3 with vLLM 0.26.0 on PYTHONPATH\nexec python3 "$@"\n' > /opt/llmhost/vllm/current/bin/python
  chmod 755 /opt/llmhost/vllm/current/bin/python
  rm -rf /tmp/repo && cp -r . /tmp/repo
  cd /tmp/repo
  export VLLM_USE_FLASHINFER_SAMPLER=0 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 VLLM_LOGGING_LEVEL=DEBUG
  setsid nohup python3 tools/gpu_vllm_proof.py > /tmp/res/runner.log 2>&1 < /dev/null &
  sleep 5; cat /tmp/res/host.txt | tail -3; head -5 /tmp/res/vllm-0.26.0-api-server-help.txt; cat /tmp/res/kernel-facts.txt | head -30 ;;
calib)  # issue 17: unpack (as start), then what vLLM holds beyond the weights, then the planner's own plans
  set -e
  unpack
  set +e
  export PYTHONPATH=/tmp/site NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
  { uname -r; nvidia-smi; python3 -c "import torch, vllm, transformers; print(torch.__version__, vllm.__version__, transformers.__version__)"; python3 -m pip list 2>/dev/null; } > /tmp/res/host.txt 2>&1
  rm -rf /tmp/repo && cp -r . /tmp/repo && cd /tmp/repo
  setsid nohup bash -c 'for m in qwen2.5-7b-instruct llama-3.1-8b-instruct; do python3 tools/gpu_weights_probe.py $m > /tmp/res/probe-$m.log 2>&1; done; VLLM_LOGGING_LEVEL=DEBUG LLMHOST_RUNS=tests/fixtures/gpu-host/vllm-0.26.0-plans/runs.json python3 tools/gpu_vllm_proof.py' > /tmp/res/runner.log 2>&1 < /dev/null &
  sleep 30; tail -3 /tmp/res/host.txt; tail -5 /tmp/res/probe-*.log ;;
poll)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && [ ! -f /tmp/res/DONE ]; do sleep 5; done
  tar czf "$OUT/res.tgz" -C /tmp res
  cat /tmp/res/summary.jsonl 2>/dev/null | cut -c1-400; tail -3 /tmp/res/runner.log; ls /tmp/res; nvidia-smi --query-gpu=memory.used --format=csv ;;
esac
