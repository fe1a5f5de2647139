#!/usr/bin/env bash
# Char vs SentencePiece on one scale: each tokenizer trains for the same wall-clock budget
# with the default model, then the table gives val bits per *character*, training chars/s
# and a sample line. Run from the repository root: bash benchmarks/tokenizers.sh [5m]
# A tokenizer whose run is already in benchmarks/out/tokenizers/ is not trained again.
set -euo pipefail
budget=${1:-5m}
corpus=corpora/tinyshakespeare.txt
out=benchmarks/out/tokenizers
mkdir -p "$out"
for spec in "char" "sp 1000" "sp 4000"; do
  set -- $spec
  name=$1${2:+-$2}
  [ -f "$out/$name/best.pt" ] || chargen train "$corpus" --size fixed --time "$budget" -o "$out/$name" --tokenizer "$1" ${2:+--vocab-size $2} 2> "$out/$name.log"
  chargen sample -c "$out/$name/best.pt" --prime "ROMEO:" -l 200 --seed 1 -t 0.8 > "$out/$name.sample.txt" 2>/dev/null
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| tokenizer | val bpc | val nats/char | chars/token | training chars/s | sample (ROMEO:, seed 1, temp 0.8) |")
print("|---|---|---|---|---|---|")
for name in ("char", "sp-1000", "sp-4000"):
    rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["val_loss"])
    speed = sum(r["chars_per_sec"] for r in rows) / len(rows)
    sample = " / ".join(l for l in (out / f"{name}.sample.txt").read_text().splitlines()[1:4] if l.strip())
    print(f"| {name} | {best['val_bpc']:.3f} | {best['val_loss']:.3f} | {best['chars_per_token']:.2f} | {speed:,.0f} | {sample[:90]} |")
PY
