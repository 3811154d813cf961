#!/bin/bash
# The GPU checks of one device-machine session, in one run (device time is short): install,
# the CUDA tests, then the benchmarks of issue 3's CUDA section. Results go to $OUT.
#   device run:  bash bench/cuda_check.sh   (carry .gpudeps: wheels for python3.12, see below;
#   QUICK=1 stops after the tests and bench/cuda.py / cuda_generate.py on the 7B shape)
# .gpudeps holds corral's pure dependencies as wheels (the machine has torch but no PyPI).
OUT=${OUT:-/tmp/cuda-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
t() { echo "[$(($(date +%s) - start)) s] $*"; }
python -m pip install -q --no-index --no-deps .gpudeps/*.whl 2>&1 | tail -2
python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python -c "import torch, corral; print(torch.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv
t "installed"
python bench/make_synthetic.py /tmp/smol.gguf --shape smollm2 --quiet &
python bench/make_synthetic.py /tmp/m7b.gguf --quiet &
timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda tests/engine/test_slot_graphs.py \
  tests/engine/test_static_cache.py tests/models/test_gpu_routes.py 2>&1 | tee "$OUT/pytest.txt" | tail -15
wait
t "tests done, models written"
timeout 180 python bench/cuda.py /tmp/smol.gguf /tmp/m7b.gguf --out "$OUT/cuda.json" 2>&1 | grep -v '^  '
t "bench/cuda.py done"
timeout 90 python bench/cuda_generate.py /tmp/m7b.gguf --out "$OUT/generate_m7b.json" 2>&1 | grep -v '^  '
[ -z "$QUICK" ] && timeout 40 python bench/cuda_generate.py /tmp/smol.gguf --out "$OUT/generate_smol.json" 2>&1 | grep -v '^  '
t "bench/cuda_generate.py done"
[ -n "$QUICK" ] && exit 0  # QUICK=1: tests and the two benchmarks only
timeout 100 python bench/cuda.py /tmp/m7b.gguf --tokens 32 --batch 1 --profile 2>&1 | tail -32 > "$OUT/profile_m7b.txt"
t "profile done"
timeout "${COMPILE_S:-170}" python bench/cuda.py /tmp/m7b.gguf --batch 1 --compile --out "$OUT/cuda_compile.json" 2>&1 | grep -v '^  ' | tail -5
t "compiled run done"
