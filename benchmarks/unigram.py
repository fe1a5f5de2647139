"""A new model's first guess: uniform over the vocabulary, or the text's unigram (what chargen does now).

    python benchmarks/unigram.py              # 4 runs of 150 steps each, a minute or two on 2 CPU cores

The text is Vim's user manual (vim-runtime's usr_*.txt, 118 characters), once as it is and once
after a first line that holds every character of Vim's whole documentation (1,338: its tables of
digraphs and scripts), so the two differ in their vocabulary and hardly in their text. Each run is
a 2x128 LSTM, batch 16 x 128, AdamW at a constant lr 4e-3, clipping 1.0, carried state, seed 0: the
same steps from either start. It prints the mean training loss of the last 10 steps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from chargen.config import ModelConfig
from chargen.data import load_corpus
from chargen.model import CharLM, detach
from chargen.training.batchers import StreamBatcher

STEPS = 150
DOCS = Path("/usr/share/vim/vim90/doc")


def texts(folder: Path) -> dict[str, Path]:
    manual = "".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("usr_*.txt")))
    every = sorted({c for p in DOCS.glob("*.txt") for c in p.read_text(encoding="utf-8", errors="replace")} - {"\n"})
    paths = {"as it is": folder / "manual.txt", "every character first": folder / "manual-wide.txt"}
    paths["as it is"].write_text(manual, encoding="utf-8")
    paths["every character first"].write_text("".join(every) + "\n" + manual, encoding="utf-8")
    return paths


def trained(corpus, unigram: bool) -> float:
    torch.manual_seed(0)
    model = CharLM(corpus.tokenizer.vocab_size, ModelConfig(layers=2, hidden=128, embed=64, dropout=0.0))
    if unigram:
        model.start_at_unigram(corpus.train)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, betas=(0.9, 0.99))
    batches, state, losses = StreamBatcher(corpus.train, 16, 128, "cpu", 0), None, []
    for k in range(STEPS):
        x, y = batches.window(0, k)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state, losses = detach(state), losses + [loss.item()]
    return sum(losses[-10:]) / 10


def main() -> None:
    if not DOCS.is_dir():
        raise SystemExit("the text is Vim's documentation: apt-get install vim-runtime")
    with tempfile.TemporaryDirectory() as folder:
        print("| the manual | vocabulary | uniform start | unigram start |\n|---|---|---|---|")
        for name, path in texts(Path(folder)).items():
            corpus = load_corpus(path, 0.1)
            losses = [trained(corpus, unigram) for unigram in (False, True)]
            print(f"| {name} | {corpus.tokenizer.vocab_size:,} | {losses[0]:.3f} | {losses[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
