#!/usr/bin/env bash
# The GPU's part of the sizing table, made to fit one call of a lent GPU machine (about 8 minutes):
# each GPU candidate's training speed as `chargen train --size auto` measures it, a 3-minute run of
# tiny shakespeare for two of them, and the GPU tests. Results and logs go to $OUT.
#   OUT=/tmp/gpu bash benchmarks/gpu.sh                          # on a CUDA machine
#   OUT=/tmp/gpu DEVICE=cpu BUDGET=10s RUNGS=2x128 bash benchmarks/gpu.sh   # a dry run of this script
# Then, here: tar xzf runs.tgz -C benchmarks/out/sizing && python benchmarks/sizing.py table --write
set -uo pipefail
out=${OUT:-benchmarks/out/gpu}
device=${DEVICE:-cuda}
budget=${BUDGET:-3m}
rungs=${RUNGS:-2x1024 3x1024}
runs=benchmarks/out/gpu-runs
export PYTHONUNBUFFERED=1 PYTHONPATH=.
mkdir -p "$out" "$runs"
out=$(cd "$out" && pwd)
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" \
  | tee "$out/device.txt"
python3 benchmarks/sizing.py speeds --device "$device" --speeds "$out/speeds.json" 2>&1 | tee "$out/speeds.log"
for rung in $rungs; do
  python3 benchmarks/sizing.py run "shakespeare:$rung:$budget" --device "$device" --clock --speeds "$out/speeds.json" \
    --out "$runs" 2>&1 | tee -a "$out/runs.log"
done
python3 benchmarks/sizing.py table --out "$runs" | tee "$out/table.md"
(cd "$runs" && tar czf "$out/runs.tgz" */*/done.json */*/metrics.jsonl)
# --size auto on this device, reading a table that holds this device's runs (the copy of it here only)
python3 benchmarks/sizing.py table --out "$runs" --write > /dev/null
timeout 100 python3 -m chargen train corpora/tinyshakespeare.txt --time 40s --device "$device" -o "$runs/auto" \
  --overwrite 2>&1 | tee "$out/auto.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tail -15 | tee "$out/pytest.log"
