"""Line mode: a corpus of one example per line (names, words, titles): its split, its batches and its marks.

Each non-empty line, stripped, is an example. The line end is the boundary symbol: a line
holds no other newline, so "\\n" before an example says where it starts and "\\n" after it
where it ends, and the model learns both. Validation is a random 10% of the lines (drawn with
a fixed seed, since lists are often sorted), and the loss counts every character of a line
and its end, as makemore does. Training reads the lines in a random order as streams, the
state carried from one to the next (the default), or, with `line_state` reset, each line from a
fresh state: the training wing's `LineBatcher` gives batches of whole lines, padded, and the loss skips the padding.
Carrying measured better (benchmarks/lines.py): it reads no padding, so it sees more lines in
the same time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from chargen.errors import CorpusError

SPLIT_SEED = 0  # the same lines are held out whatever the run's seed, so runs compare
PAD = -100  # a target the loss skips (cross_entropy's ignore_index)
MAX_LINE = 1024  # tokens; a longer line is cut there
BUCKET = 16  # batches whose lines are sorted by length together


def examples(chunks: Iterator[str]) -> list[str]:
    """The examples of a text: its non-empty lines, stripped."""
    text = "".join(chunks)
    return [line for line in (raw.strip() for raw in text.split("\n")) if line]


def split(lines: list[str], val_frac: float) -> tuple[list[str], list[str]]:
    """(train, val): a random `val_frac` of the lines (at least one) held out, each part in random order."""
    if len(lines) < 2:
        raise CorpusError(f"line mode needs at least two lines to hold one out, not {len(lines)}: is this a list?")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(lines))
    held = max(1, int(len(lines) * val_frac))
    return [lines[i] for i in order[held:]], [lines[i] for i in order[:held]]


def joined(lines: list[str]) -> str:
    """The text of `lines` as the model reads them: each between line ends ("\\na\\nb\\n")."""
    return "\n" + "".join(line + "\n" for line in lines)


def boundary(tokenizer) -> int:
    """The id of the line end, which in line mode marks where each example starts and ends."""
    return int(tokenizer.encode("\n")[0])


def line_hash(line: str) -> int:
    return int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "little", signed=True)


def hashes(lines: list[str]) -> torch.Tensor:
    """Sorted int64 hashes of `lines`: enough to tell whether a sample is one of them, kept in a checkpoint."""
    return torch.tensor(sorted({line_hash(line) for line in lines}), dtype=torch.int64)


@dataclass
class LineSets:
    """The training and validation lines of a line-mode model, as hashes."""

    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def of(cls, train: list[str], val: list[str]) -> LineSets:
        return cls(hashes(train), hashes(val))

    def mark(self, line: str) -> str:
        """'in train', 'in val' or 'new'."""
        h = torch.tensor([line_hash(line.strip())])
        for name, known in (("in train", self.train), ("in val", self.val)):
            at = torch.searchsorted(known, h)
            if at < len(known) and known[at] == h:
                return name
        return "new"

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    @classmethod
    def from_dict(cls, data: dict) -> LineSets:
        train, val = data["train"], data["val"]
        for t in (train, val):
            if not (isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.dim() == 1):
                raise ValueError("its line sets are not lists of hashes")
        return cls(train, val)


def bounds(ids: np.ndarray, boundary: int) -> tuple[np.ndarray, np.ndarray]:
    """(at, ends): the offsets of the boundaries before and after each example of `ids` (a `joined` text)."""
    found = np.flatnonzero(np.asarray(ids) == boundary)
    if len(found) < 2:
        raise CorpusError("the text holds no whole lines")
    return found[:-1], found[1:]


def padded(ids: np.ndarray, at: np.ndarray, ends: np.ndarray, boundary: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (len(at), T): the examples from each start to its end, x padded with the boundary and
    y with PAD, so that the loss counts exactly each example's characters and its end."""
    lengths = np.minimum(ends - at, MAX_LINE)  # tokens read: the start boundary and the line
    width = int(lengths.max())
    x = np.full((len(at), width), boundary, dtype=np.int64)
    y = np.full((len(at), width), PAD, dtype=np.int64)
    for row, (a, n) in enumerate(zip(at.tolist(), lengths.tolist())):
        x[row, :n] = ids[a : a + n]
        y[row, :n] = ids[a + 1 : a + n + 1]
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.inference_mode()
def evaluate_lines(model, ids: np.ndarray, boundary: int, device: torch.device, batch: int = 256) -> float:
    """Total nats of every example of `ids` (a `joined` text), each read from a fresh state: its characters
    and its end, given the boundary before it."""
    model.eval()
    ids = np.asarray(ids)
    at, ends = bounds(ids, boundary)
    order = np.argsort(ends - at, kind="stable")  # like lengths together: less padding
    total = torch.zeros((), dtype=torch.float64, device=device)
    for lo in range(0, len(order), batch):
        rows = order[lo : lo + batch]
        x, y = padded(ids, at[rows], ends[rows], boundary)
        logits, _ = model(x.to(device))
        total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="sum")
    return float(total)
