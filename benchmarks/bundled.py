"""The bundled model: train tiny shakespeare with chargen's own recipe, store it small, check what storing cost.

    python benchmarks/bundled.py            # trains 12 minutes if benchmarks/out/bundled/ has no model yet

The run is what `chargen train` does with a 12-minute budget and no other flag: `--size auto`
chooses the model, batch, lr and regularisers (on 2 CPU cores, a 2x384: the size the wheel and the
exported page were measured at; the run says what it chose).

Writes chargen/bundled/shakespeare.pt: the best checkpoint's weights in bfloat16 (or float16,
whichever scores closer to float32 on the validation text), without the optimizer and the
trainer's state, which only a resume needs. Prints the validation loss of each storage and
the file's size.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "out" / "bundled"
CORPUS = ROOT / "corpora" / "tinyshakespeare.txt"
TARGET = ROOT / "chargen" / "bundled" / "shakespeare.pt"
COMMAND = ["chargen", "train", str(CORPUS), "-o", str(RUN), "--time", "12m", "--seed", "1"]


def val_loss(ckpt, val_ids) -> float:
    """Nats/char of the validation text, computed in float32 whatever the stored dtype."""
    from chargen.model import CharLM
    from chargen.score import evaluate

    model = CharLM(ckpt.vocab_size, ckpt.model_config)
    model.load_state_dict(ckpt.weights)
    return evaluate(model, val_ids, torch.device("cpu")) / ckpt.corpus.val_chars


def main() -> None:
    from chargen import checkpoint
    from chargen.data import load_corpus

    if not (RUN / "best.pt").exists():
        print("training:", " ".join(COMMAND), flush=True)
        subprocess.run(COMMAND, check=True)
    best = checkpoint.read(RUN / "best.pt")
    corpus = load_corpus(CORPUS, best.train_config.val_frac, tokenizer=best.tokenizer)
    full = val_loss(best, corpus.val)
    print(f"float32: {full:.5f} nats/char (best val recorded by the run: {best.best_val:.4f})")
    stored = {}
    for dtype in (torch.bfloat16, torch.float16):
        slim = replace(
            best,
            weights={k: v.to(dtype) for k, v in best.weights.items()},
            optimizer=None,
            state=None,
            batch_size=None,
            rng=None,
            cuda_rng=None,
            corpus=replace(best.corpus, path=None),  # this machine's path means nothing in a wheel
        )
        stored[dtype] = (val_loss(slim, corpus.val), slim)
        print(f"{str(dtype).removeprefix('torch.')}: {stored[dtype][0]:.5f} nats/char ({stored[dtype][0] - full:+.5f})")
    loss, slim = min(stored.values(), key=lambda s: abs(s[0] - full))
    if abs(loss - full) >= 0.01:
        sys.exit("half precision costs 0.01 nats/char or more: not written")
    TARGET.parent.mkdir(exist_ok=True)
    checkpoint.save_model(slim, TARGET)
    print(f"wrote {TARGET.relative_to(ROOT)}: {TARGET.stat().st_size / 1e6:.2f} MB, {slim.describe()}")


if __name__ == "__main__":
    main()
