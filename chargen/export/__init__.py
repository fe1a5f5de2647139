"""Exports: a model leaves Python as one HTML page that writes in a browser, or as an ONNX one-step graph.

Both read the checkpoint as every command does (`Generator.load`: the verifying loader, the weights that
`chargen sample` writes with), so a hostile or damaged file is refused the same way before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from chargen.checkpoint import ModelCheckpoint
from chargen.model import CharLM


@dataclass
class Exported:
    """What an export writes from: the model in fp32 on the CPU, in eval mode, and what it was read from."""

    model: CharLM
    checkpoint: ModelCheckpoint  # configs, tokenizer, corpus and metrics, without the weights

    @classmethod
    def load(cls, path: str | os.PathLike) -> Exported:
        from chargen.generate import Generator

        generator = Generator.load(path, device="cpu")
        return cls(generator.model, generator.checkpoint)

    def about(self) -> dict:
        """What the model is, from what `chargen info` tells of it: plain data for a page or a file's metadata.
        The checkpoint is named by its file name only: an exported file does not carry the folders it came from."""
        c = self.checkpoint
        info = c.summary()
        return {
            "name": c.path.name if c.path else None,
            "summary": c.describe(),
            "corpus": c.corpus.name,
            "train_chars": c.corpus.train_chars,
            "val_chars": c.corpus.val_chars,
            "tokenizer": info["tokenizer"]["kind"],
            "vocab_size": info["tokenizer"]["vocab_size"],
            **{k: info[k] for k in ("parameters", "model", "step")},
            "epoch": round(info["epoch"], 2),
            **{k: info[k] for k in ("best_val_loss", "best_val_bpc", "weights")},
        }
