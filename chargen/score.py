"""Scoring a text under a model: total nats, every character once, the state carried through the whole text.

Losses are per character of text whatever the tokenizer, so a char model, a subword model
and a compressor compare on one scale (bits per character = nats / ln 2).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from chargen.config import LearnConfig
from chargen.errors import ChargenError, CorpusError
from chargen.lines import boundary, evaluate_lines, examples, joined
from chargen.model import CharLM, State


@torch.inference_mode()
def evaluate(
    model: CharLM,
    ids: np.ndarray,
    device: torch.device,
    amp: bool = False,
    window: int = 1024,
    part: tuple[int, int] = (0, 1),
) -> float:
    """Total nats of every ids[i+1] given all of ids[:i+1], the state carried throughout.

    The text is cut into a few long streams run side by side (each at least 4,096 tokens,
    so cold starts cost next to nothing); what is left over continues the last stream.
    Every target is scored exactly once. `part` (k, n) scores only streams k, k + n, ...: the
    n parts of n processes add up to the whole.
    """
    model.eval()
    n = len(ids) - 1
    streams = max(1, min(64, n // 4096))
    per = n // streams
    total = torch.zeros((), dtype=torch.float64, device=device)

    def run(x: np.ndarray, y: np.ndarray, state: State | None) -> State | None:
        nonlocal total
        for lo in range(0, x.shape[1], window):
            xb = torch.from_numpy(x[:, lo : lo + window].astype(np.int64)).to(device)
            yb = torch.from_numpy(y[:, lo : lo + window].astype(np.int64)).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, state = model(xb, state)
            total += F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="sum")
        return state

    mine = list(range(streams))[part[0] :: part[1]]
    if not mine:
        return 0.0
    x, y = ids[: streams * per].reshape(streams, per), ids[1 : streams * per + 1].reshape(streams, per)
    state = run(x[mine], y[mine], None)
    if n > streams * per and mine[-1] == streams - 1:  # the tail continues the last stream
        last = tuple(s[:, -1:] for s in state) if state else None
        run(ids[streams * per : n][None], ids[streams * per + 1 : n + 1][None], last)
    return float(total)


def scored_chars(tokenizer, ids: np.ndarray, chars: int) -> int:
    """Characters that `evaluate` scores: all but those of the first token, which is only context."""
    return chars - len(tokenizer.decode([int(ids[0])]))


@dataclass
class Score:
    """A text's loss under a model."""

    nats_per_char: float
    chars: int
    unknown: list[str] = field(default_factory=list)  # characters the model never saw, scored as unknown
    dynamic: LearnConfig | None = None  # the settings, when the model learnt as it read

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def score_file(generator, path: str | os.PathLike, dynamic: LearnConfig | None = None) -> Score:
    """`path` (a text file or a folder) scored under `generator`'s model, on its device. With `dynamic`,
    a copy of the model learns as it reads, in one stream (see `chargen.dynamic`); the model is unchanged."""
    from chargen.data import corpus_files, read_chunks

    tok = generator.tokenizer
    chars, unknown, parts = 0, {}, []
    chunks = read_chunks(corpus_files(path))
    if generator.line_state is not None:  # a list, read as the model was trained on one: line by line
        if dynamic is not None and generator.line_state == "reset":
            raise ChargenError("--dynamic reads one stream, and this model reads each line from a fresh state")
        chunks = iter([joined(examples(chunks))])
    for chunk in chunks:
        chars += len(chunk)
        unknown.update(dict.fromkeys(tok.unknown(chunk)))
        parts.append(tok.encode(chunk))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(ids) < 2:
        raise CorpusError(f"{path} is too short to score: it needs at least two characters")
    if generator.line_state == "reset":
        nats = evaluate_lines(generator.model, ids, boundary(tok), generator.device)
    elif dynamic is None:
        nats = evaluate(generator.model, ids, generator.device)
    else:
        from chargen.dynamic import Learner

        nats, _ = Learner(copy.deepcopy(generator.model).float(), dynamic).read(ids)
    return Score(nats / scored_chars(tok, ids, chars), chars, list(unknown), dynamic)


PROBES = 200  # spans of a scored text looked for in the training text
PROBE_CHARS = 48  # characters per span: long enough that a match is the same text, not a common phrase
MAX_SEARCHED = 50_000_000  # bytes of a training corpus searched, characters of a text read, at most


def trained_share(ckpt, path: str | os.PathLike) -> float | None:
    """The share of the text at `path` that the model of `ckpt` was trained on, or None where it cannot tell.

    A line-mode model knows its training lines by their hashes. Otherwise, spans of the text are looked for
    in the training part of the corpus the model was trained on, if that file is still where it was (and
    small enough to search in a moment). Either way, at most MAX_SEARCHED characters of the text are read."""
    from pathlib import Path

    from chargen.data import corpus_files, read_text

    if ckpt.lines is not None:
        lines = examples(iter([read_text(corpus_files(path), MAX_SEARCHED)]))
        return sum(ckpt.lines.mark(line) == "in train" for line in lines) / len(lines) if lines else None
    source = ckpt.corpus.path
    if source is None or not Path(source).exists():
        return None
    files = corpus_files(source)
    if sum(Path(f).stat().st_size for f in files) > MAX_SEARCHED:
        return None
    text = read_text(corpus_files(path), MAX_SEARCHED)
    if len(text) < PROBE_CHARS:
        return None
    trained = read_text(files, ckpt.corpus.train_chars)
    starts = np.unique(np.linspace(0, len(text) - PROBE_CHARS, PROBES).astype(int))
    return sum(text[s : s + PROBE_CHARS] in trained for s in starts) / len(starts)


@torch.inference_mode()
def surprisal(generator, text: str, top_k: int = 5) -> dict:
    """Bits of each character given those before it (the first has no context: null), its rank among the
    model's guesses (1: the likeliest), and the top guesses. Characters the model never saw score as its
    unknown symbol."""
    tok = generator.tokenizer
    if tok.kind != "char":
        raise ChargenError("scoring per character needs a character model; this one has subword pieces")
    ids = torch.as_tensor(tok.encode(text).astype("int64"), device=generator.device)[None]
    chars = [{"char": c, "bits": None, "rank": None, "top": []} for c in text]
    total = 0.0
    if ids.shape[1] > 1:
        logits, _ = generator.model(ids[:, :-1])
        logp = logits[0].float().log_softmax(-1)  # (T-1, V): the guesses for characters 1..T-1
        actual = logp.gather(1, ids[0, 1:, None])
        got, rank = actual[:, 0] / -math.log(2), (logp > actual).sum(1) + 1
        best = logp.topk(min(top_k, logp.shape[1]), -1)
        rows = zip(got.tolist(), rank.tolist(), best.values.exp().tolist(), best.indices.tolist())
        for i, (bits, r, values, at) in enumerate(rows):
            top = [[tok.chars[j], round(p, 4)] for j, p in zip(at, values)]
            chars[i + 1].update(bits=round(bits, 4), rank=r, top=top)
            total += bits
    scored = max(len(text) - 1, 0)
    return {"chars": chars, "total_bits": round(total, 4), "mean_bits": round(total / scored, 4) if scored else None}
