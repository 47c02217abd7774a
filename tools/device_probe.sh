#!/usr/bin/env bash
# Run on the real Ubuntu GPU host (the device machine) from the repo root, with pyinfra's wheels in .whl/.
# Records facts, CUDA-visible vs nvidia-smi memory, and the whole deploy's dry run with the real card.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ cat /etc/os-release; uname -a; python3 --version; ps -p 1 -o comm=; nvidia-smi; } > "$OUT/host.txt" 2>&1
python3 tools/gpu_facts.py "$OUT/facts" > "$OUT/facts.jsonl" 2>&1
python3 - > "$OUT/torch_mem.json" 2>&1 <<'PY'
import json, subprocess, torch
free, total = torch.cuda.mem_get_info()
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,memory.free", "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"torch_total_bytes": total, "torch_free_bytes": free, "torch_total_mib": total / 2**20,
                  "torch_props_total_mib": torch.cuda.get_device_properties(0).total_memory / 2**20, "nvidia_smi": smi}))
PY
# The pinned model's config in an offline controller cache (no network here).
SHA=ee9e2f9003ae49425a29e73a29b59dffc8870a83
SNAP=/tmp/hfc/hub/models--astronomer--Llama-3-8B-Instruct-GPTQ-4-Bit/snapshots/$SHA
mkdir -p "$SNAP" && cp tests/fixtures/models/llama-3-8b-instruct-gptq/*.json "$SNAP/"
export HF_HOME=/tmp/hfc HF_HUB_OFFLINE=1
python3 -m pyinfra @local deploy.py --dry --diff </dev/null > "$OUT/dryrun.txt" 2>&1; echo "exit=$?" >> "$OUT/dryrun.txt"
python3 -m pyinfra @local deploy.py --dry --diff --data vllm_max_model_len=4096 </dev/null > "$OUT/dryrun-override.txt" 2>&1; echo "exit=$?" >> "$OUT/dryrun-override.txt"
python3 -m operations.tuning --config tests/fixtures/models/llama-3.1-8b-instruct/config.json \
  --gpu-memory-mib "$(python3 -c 'import torch; print(torch.cuda.mem_get_info()[1] // 2**20)')" --compute-capability 9.0 > "$OUT/plan-h200-llama31.txt" 2>&1
tail -5 "$OUT/dryrun.txt"; cat "$OUT/torch_mem.json"
