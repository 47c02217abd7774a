#!/usr/bin/env bash
# Builds the pieces tools/gpu_device.sh stage/calib carries to the GPU host, one per call (<= 58 MB each): the era's
# lock less what the GPU host already has (its torch, CUDA wheels and the packages its image lists) and less the
# kernels that serving a Llama or Qwen on sm_90 with the FlashInfer sampler off does not load (flashinfer,
# cutlass-dsl, tilelang, quack, humming, tokenspeed, opencv, nvvideocodec, z3); vLLM's wheel stripped of the parts
# sm_90 with Python 3.12 does not use (vllm-rs, fmha_sm100, deep_gemm's headers and other Pythons' builds) as a zstd
# tar in four parts; zstandard to unpack it there. Output: .dev/p1 .. .dev/p6 (git-ignored through .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WORK:-/tmp/llmhost-gpu-pieces}
LOCK=operations/core/locks/vllm-0.26.0.txt
HOST="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer
click cloudpickle einops filelock frozenlist fsspec grpcio h11 hf-xet httpcore httpx huggingface-hub idna jinja2
llvmlite markdown-it-py markupsafe mdurl ml-dtypes mpmath msgpack multidict networkx ninja numba numpy packaging pillow
pip prometheus-client propcache protobuf psutil py-cpuinfo pygments pyyaml regex requests rich safetensors
sentencepiece setuptools shellingham six sympy tabulate tiktoken tokenizers tqdm transformers typer typing-extensions
urllib3 uvloop yarl"
SKIP="flashinfer-python nvidia-cutlass-dsl nvidia-cutlass-dsl-libs-base nvidia-cutlass-dsl-libs-cu13 tilelang
quack-kernels humming-kernels tokenspeed-mla tokenspeed-triton opencv-python-headless pynvvideocodec z3-solver vllm"
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp"
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLAT="$PLAT --platform ${p}_x86_64"
done
norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }
rm -rf "$W" .dev && mkdir -p "$W/deps" "$W/vllm" "$W/x" .dev/p1 .dev/p2 .dev/p3 .dev/p4 .dev/p5 .dev/p6
grep -E '^[a-zA-Z]' "$LOCK" | while read -r pin; do
  n=$(norm "${pin%%==*}")
  case $n in torch*|triton*|nvidia-*|cuda-*) continue ;; esac
  for h in $HOST $SKIP; do [ "$n" = "$(norm "$h")" ] && continue 2; done
  echo "$pin"
done > "$W/deps.txt"
python3 -m pip download -q --no-deps $PLAT -d "$W/deps" -r "$W/deps.txt"
python3 -m pip download -q --no-deps $PLAT -d "$W/deps" zstandard==0.25.0
python3 -m pip download -q --no-deps $PLAT -d "$W/vllm" "$(grep '^vllm==' "$LOCK")"
(cd "$W/x" && unzip -q "$W"/vllm/vllm-*.whl && rm -rf vllm/vllm-rs vllm/third_party/fmha_sm100 \
  vllm/third_party/deep_gemm/include vllm/third_party/deep_gemm/_C.cpython-31[0134]-*.so && tar cf - . | zstd -q -15 -T0 > "$W/vllm.tzst")
split -b 55000000 -d -a 2 "$W/vllm.tzst" "$W/vllm.tzst."
cp "$W"/deps/xgrammar-*.whl "$W"/deps/zstandard-*.whl .dev/p1/
find "$W/deps" -name '*.whl' ! -name 'xgrammar-*' ! -name 'zstandard-*' -exec cp {} .dev/p2/ \;
i=3; for f in "$W"/vllm.tzst.0*; do cp "$f" ".dev/p$i/"; i=$((i + 1)); done
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
du -sh .dev/*
