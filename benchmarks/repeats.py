"""What each sampling penalty does to the loops char-rnn samples fall into, for one trained model.

    python benchmarks/repeats.py checkpoints/tinyshakespeare/best.pt

For each setting, 100 samples of 1,000 characters are drawn in one batch (same seed, prime a
line break). Repeats: the share of 20-character spans that already appeared earlier in the same
sample (a loop repeats long spans; ordinary English repeats few of 20 characters). Model nats:
the mean nats per character of the samples under the model itself, unpenalised at temperature 1
(what a penalty costs in typicality: higher is less like the training text). Distinct words: the
share of a sample's words that are distinct, averaged.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from chargen.config import SampleConfig
from chargen.generate import Generator

SETTINGS = [  # (label, sampling settings beyond temperature)
    ("none", {}),
    ("repeat 1.1", {"repeat_penalty": 1.1}),
    ("repeat 1.3", {"repeat_penalty": 1.3}),
    ("presence 0.5", {"presence_penalty": 0.5}),
    ("presence 1.0", {"presence_penalty": 1.0}),
    ("frequency 0.3", {"frequency_penalty": 0.3}),
    ("frequency 1.0", {"frequency_penalty": 1.0}),
    ("min-p 0.1", {"min_p": 0.1}),
]


def repeated_share(text: str, span: int) -> float:
    seen, hits = set(), 0
    for i in range(len(text) - span + 1):
        hits += text[i : i + span] in seen
        seen.add(text[i : i + span])
    return hits / max(1, len(text) - span + 1)


@torch.inference_mode()
def model_nats(gen: Generator, texts: list[str]) -> float:
    """Mean nats per character of `texts` under the model, each read from a line break, state carried."""
    ids = torch.tensor([gen.tokenizer.encode("\n" + t).tolist() for t in texts], device=gen.device)  # (B, T+1)
    logits, _ = gen.model(ids[:, :-1])
    return float(F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--length", type=int, default=1000)
    ap.add_argument("--span", type=int, default=20)
    ap.add_argument("--temps", default="0.8,0.5")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    gen = Generator.load(args.checkpoint, args.device)
    if gen.tokenizer.kind != "char":
        raise SystemExit("this measures a char model (one token a character)")
    print(f"{args.samples} samples of {args.length} characters each, {args.checkpoint}\n")
    print("| temp | penalty | repeated 20-char spans | model nats/char | distinct words |")
    print("|---|---|---|---|---|")
    for temp in map(float, args.temps.split(",")):
        for label, extra in SETTINGS:
            config = SampleConfig(temp=temp, length=args.length, seed=0, **extra)
            texts = [""] * args.samples
            for b, piece in gen.stream(gen.prime("\n", batch=args.samples), config):
                texts[b] += piece
            repeats = sum(repeated_share(t, args.span) for t in texts) / len(texts)
            words = [t.split() for t in texts]
            distinct = sum(len(set(w)) / max(1, len(w)) for w in words) / len(words)
            print(f"| {temp:g} | {label} | {repeats:.1%} | {model_nats(gen, texts):.3f} | {distinct:.1%} |", flush=True)


if __name__ == "__main__":
    main()
