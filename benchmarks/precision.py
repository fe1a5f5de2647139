"""What `chargen sample --bf16` costs in quality and buys in speed, for one trained model.

    python benchmarks/precision.py checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt

The validation part of the corpus (the split the model was trained with) is scored one token
at a time through the sampling step, state carried, in fp32 and in bf16: the difference is
what bf16 weights and state do to the model's predictions. Then 64 streams are sampled in
each precision and timed.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from bench import write_rate  # this folder's sibling script

from chargen.data import load_corpus
from chargen.generate import Generator

STREAMS = 64


@torch.inference_mode()
def stepped_nats_per_token(gen: Generator, ids) -> float:
    """Mean nats of each next token, the text cut into STREAMS streams stepped side by side."""
    per = (len(ids) - 1) // STREAMS
    x = torch.from_numpy(ids[: STREAMS * per + 1].astype("int64")).to(gen.device)
    inputs, targets = x[:-1].view(STREAMS, per), x[1:].view(STREAMS, per)
    state, total = gen.model.initial_state(STREAMS, gen.device), 0.0
    for t in range(per):
        logits, state = gen.model.step(inputs[:, t], state)
        total += F.cross_entropy(logits.float(), targets[:, t], reduction="sum").item()
    return total / (STREAMS * per)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("corpus")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for dtype in (torch.float32, torch.bfloat16):
        gen = Generator.load(args.checkpoint, args.device, dtype)
        corpus = load_corpus(args.corpus, gen.checkpoint.train_config.val_frac, tokenizer=gen.tokenizer)
        nats = stepped_nats_per_token(gen, corpus.val) * len(corpus.val) / corpus.val_chars
        speed = max(write_rate(gen, STREAMS, length=1000) for _ in range(3))
        print(
            f"{str(dtype).removeprefix('torch.'):>8}: val {nats:.4f} nats/char ({nats / math.log(2):.4f} bpc), "
            f"{STREAMS} streams {speed:,.0f} chars/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
