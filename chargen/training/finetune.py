"""Starting a run from a parent model (`--from`): its shape kept, its vocabulary grown, its weights carried over.

A character parent keeps every id; the characters of the new text it never saw are added
after them. Their embedding rows start as the mean of the parent's (plus a little noise, so
they differ), and their head rows as the mean of the parent's head, its bias set NEW_LOGIT
nats below: each new character's logit is then the mean of the old ones less NEW_LOGIT,
which is at most e^-NEW_LOGIT of the softmax's total. Before the first step the parent's
probabilities for a text of old characters move by less than 1e-6, and a new character is
unlikely but possible. A SentencePiece parent keeps its pieces (byte fallback covers any
text). The run records its lineage: the parent by name, file hash, corpus and steps.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from chargen.checkpoint import ModelCheckpoint
from chargen.config import ModelConfig
from chargen.errors import SettingError

SHAPE = ("cell", "layers", "hidden", "embed")  # what a fine-tuned model takes from its parent, never from a flag
TOKENIZING = ("tokenizer", "vocab_size", "sp_model")  # the parent's way of reading text, kept too
NEW_LOGIT = 14.0  # nats below the mean logit a new character starts at: e^-14 < 1e-6 of the probability
EMBED_NOISE = 0.1  # of the spread of the parent's embedding rows, to tell new characters apart


def check_kept(parent: ModelCheckpoint, given: dict, name: str) -> None:
    """Refuse, in one line, a shape or tokenizer setting that disagrees with the parent's."""
    kept = {**parent.model_config.to_dict(), **parent.train_config.to_dict()}
    for key in (*SHAPE, *TOKENIZING):
        if key in given and given[key] != kept[key]:
            raise SettingError(
                f"{key} is {kept[key]!r} in {name}, not {given[key]!r}: a fine-tuned model keeps its parent's "
                f"shape and tokenizer; drop it, or train from scratch without --from",
                key,
            )


def shape_of(parent: ModelCheckpoint, given: dict) -> ModelConfig:
    """The new run's model settings: the parent's shape, the regularisers given (or the defaults)."""
    rest = {k: v for k, v in given.items() if k in ModelConfig.__dataclass_fields__ and k not in SHAPE}
    return ModelConfig(**{k: getattr(parent.model_config, k) for k in SHAPE}, **rest)


def grown_weights(weights: dict[str, torch.Tensor], vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """The parent's weights for a vocabulary grown to `vocab_size`: old rows unchanged, new rows as the
    module's docstring says."""
    old = weights["embed.weight"].shape[0]
    added = vocab_size - old
    if added <= 0:
        return dict(weights)
    generator = torch.Generator().manual_seed(seed)
    embed, head, bias = (weights[k].float() for k in ("embed.weight", "head.weight", "head.bias"))
    noise = torch.randn(added, embed.shape[1], generator=generator) * embed.std(0) * EMBED_NOISE
    new_bias = bias.mean() - NEW_LOGIT - math.log(added)  # together, the new characters share e^-14 of the total
    grown = {
        "embed.weight": torch.cat([embed, embed.mean(0).expand(added, -1) + noise]),
        "head.weight": torch.cat([head, head.mean(0).expand(added, -1)]),
        "head.bias": torch.cat([bias, new_bias.expand(added)]),
    }
    return {**weights, **{k: v.to(weights[k].dtype) for k, v in grown.items()}}


def lineage(parent: ModelCheckpoint, name: str, added: int) -> list[dict]:
    """The new run's ancestry, nearest first: this parent (as given, its file's SHA-256, its corpus and steps,
    the characters added to its vocabulary), then the parent's own."""
    record = {
        "name": name,
        "path": str(Path(parent.path).resolve()) if parent.path else None,
        "sha256": file_sha256(parent.path) if parent.path else None,
        "corpus": parent.corpus.name,
        "steps": parent.position.step,
        "best_val": None if parent.best_val is None else round(parent.best_val, 5),
        "added": added,
    }
    return [record, *parent.lineage]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
