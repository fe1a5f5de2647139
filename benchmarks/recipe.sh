#!/usr/bin/env bash
# The GPU recipe search: each candidate trains on tiny shakespeare for the same wall-clock
# budget, then a table gives its best val loss, the step it was reached at and training chars/s.
# Run from the repository root, on the machine the recipe is for:
#   bash benchmarks/recipe.sh 3m cuda            # every candidate below
#   bash benchmarks/recipe.sh 3m cuda 2x1024     # only the candidates named
# A candidate whose run is already in benchmarks/out/recipe/ is not trained again.
set -euo pipefail
budget=${1:-3m}
device=${2:-cuda}
shift $(( $# < 2 ? $# : 2 ))
corpus=corpora/tinyshakespeare.txt
out=benchmarks/out/recipe
mkdir -p "$out"
declare -A candidates=(
  [2x1024]="--layers 2 --hidden 1024 --embed 128 --dropout 0.4 --batch-size 128 --seq-len 256 --lr 2e-3"
  [3x1024]="--layers 3 --hidden 1024 --embed 128 --dropout 0.5 --batch-size 128 --seq-len 256 --lr 2e-3"
  [3x768]="--layers 3 --hidden 768 --embed 128 --dropout 0.4 --batch-size 64 --seq-len 256 --lr 2e-3"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(2x1024 3x1024 3x768)
for name in "${names[@]}"; do
  [ -f "$out/$name/best.pt" ] || chargen train "$corpus" --time "$budget" --device "$device" -o "$out/$name" \
    ${candidates[$name]} 2> "$out/$name.log"
done
python3 - "$out" "${names[@]}" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| candidate | best val nats/char | bpc | at step | epochs | training chars/s |")
print("|---|---|---|---|---|---|")
for name in sys.argv[2:]:
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["val_loss"])
    speed = sum(r["chars_per_sec"] for r in rows) / len(rows)
    print(f"| {name} | {best['val_loss']:.4f} | {best['val_bpc']:.4f} | {best['step']} | {best['epoch']:.1f} | {speed:,.0f} |")
PY
