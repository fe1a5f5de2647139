"""A corpus of a gigabyte: how fast it is read and encoded, with how much memory, cold and warm.

    python benchmarks/bigcorpus.py make [--mb 1000]   # benchmarks/out/big/big.txt: tiny shakespeare's lines shuffled
    python benchmarks/bigcorpus.py measure            # setting a run up on it, with an empty id cache, then again
    python benchmarks/bigcorpus.py eval               # scoring 1M characters of it, twice in one process

"Setting up" is `chargen.training.run.prepare` (what `chargen train` does before its first step: count,
fit the vocabulary, split, encode to the id cache, build the model); each is timed in a fresh
process, whose peak resident memory is read from the kernel. The text is never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "big"
CORPUS = OUT / "big.txt"

PREPARE = """
import json, resource, sys, time
from chargen.training.run import prepare
start = time.perf_counter()
trainer = prepare(sys.argv[1], out=sys.argv[2], overwrite=True, steps=1, device="cpu")
seconds, c = time.perf_counter() - start, trainer.corpus
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
chars = c.train_chars + c.val_chars
print(json.dumps({"seconds": seconds, "chars": chars, "val_chars": c.val_chars, "peak_mb": peak_mb}))
"""


def make(mb: int) -> None:
    lines = (ROOT / "corpora" / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    OUT.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(CORPUS, "w", encoding="utf-8") as f:
        while written < mb * 1_000_000:
            rng.shuffle(lines)
            block = "".join(lines)
            f.write(block)
            written += len(block.encode())
    print(f"{CORPUS}: {written / 1e6:,.0f} MB")


def prepare(cache: Path) -> dict:
    env = {**os.environ, "CHARGEN_CACHE": str(cache)}
    args = [sys.executable, "-c", PREPARE, str(CORPUS), str(OUT / "run")]
    return json.loads(subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout)


def measure() -> None:
    cache = OUT / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    size = CORPUS.stat().st_size
    print("| cache | set-up seconds | MB/s | peak RSS | characters | held out |")
    print("|---|---|---|---|---|---|")
    for label in ("cold", "warm"):
        r = prepare(cache)
        print(
            f"| {label} | {r['seconds']:.1f} | {size / 1e6 / r['seconds']:,.0f} | {r['peak_mb']:,.0f} MB "
            f"| {r['chars']:,} | {r['val_chars']:,} |",
            flush=True,
        )


def evaluate_twice() -> None:
    """chars/s of `evaluate` (the bundled 2x384 model, this CPU) on the text's first 1M characters: the first
    call pays any set-up (oneDNN builds a primitive per input shape), the second does not."""
    import time

    import torch

    import chargen
    from chargen.score import evaluate

    model = chargen.load("shakespeare", "cpu")
    with open(CORPUS, encoding="utf-8") as f:
        ids = model.tokenizer.encode(f.read(1_000_000))
    for label in ("cold", "warm"):
        start = time.perf_counter()
        evaluate(model.model, ids, torch.device("cpu"))
        print(f"{label}: {len(ids) / (time.perf_counter() - start):,.0f} chars/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["make", "measure", "eval"])
    ap.add_argument("--mb", type=int, default=1000)
    args = ap.parse_args()
    {"make": lambda: make(args.mb), "measure": measure, "eval": evaluate_twice}[args.step]()


if __name__ == "__main__":
    main()
