"""The writer: one step of writing for any rows of a batch, the one place a token is drawn and becomes text.

Every way chargen writes (`chargen sample`, a chat's answers, the server's streams) keeps a `Row` per
stream and steps the model itself between the two halves of a step: `Writer.draw` (penalize, ban,
keep byte pieces valid UTF-8, sample by groups of equal settings, remember) and `Writer.emit`
(decode, hold back what may begin a stop string, stop, count down the length, say why a row ended).
`sample` holds the only random draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from chargen.config import SampleConfig
from chargen.tokenizer import StreamDecoder, Tokenizer


def sample(
    logits: Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    min_p: float | None = None,
) -> Tensor:
    """Draw one id per row of logits (B, V) -> (B,). Temperature 0 is argmax.

    `generator` is one for the whole batch, or one per row: then row b's draw depends on its
    own generator alone, so it equals a batch-of-one draw with that generator."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float()
    # (B, V) relative to each row's top, so no temperature can push every entry to -inf or overflow it
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs > top_p  # keep the smallest head whose mass reaches top_p
        logits = logits.masked_fill(outside.scatter(-1, order, outside), -torch.inf)
    if min_p is not None:  # p >= min_p * p_top, i.e. logit >= top logit (0 here) + log(min_p)
        logits = logits.masked_fill(logits < math.log(min_p), -torch.inf)
    # Gumbel-max: the argmax of logits plus Gumbel noise is an exact draw from their softmax,
    # and cheaper than torch.multinomial (one uniform per entry, no normalising, no search).
    if isinstance(generator, list):
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g, device=logits.device) for g in generator])
    else:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    gumbel = uniform.clamp_(min=torch.finfo(uniform.dtype).tiny).log_().neg_().log_().neg_()
    return (logits + gumbel).argmax(-1)


def penalize(
    logits: Tensor, counts: Tensor, repeat: float = 1.0, presence: float = 0.0, frequency: float = 0.0
) -> Tensor:
    """Logits (B, V) made less likely for tokens seen recently; `counts` (B, V) is how often each was seen.

    A seen token's logit is divided by `repeat` when positive and multiplied by it when negative
    (CTRL's and llama.cpp's repeat penalty), then lowered by `presence` once and `frequency` per
    occurrence (OpenAI's penalties). Unseen tokens are left alone."""
    seen = counts > 0
    logits = logits.float()
    if repeat != 1:
        logits = torch.where(seen, torch.where(logits > 0, logits / repeat, logits * repeat), logits)
    return logits - presence * seen - frequency * counts


class StopMatcher:
    """Streams text, holding back any tail that could begin a stop string; stops at the first match."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.pending, self.stopped = stops, "", False
        self.held = ""  # after a stop: the stop string (and what came with it), read by the model, not shown

    def feed(self, text: str) -> str:
        """The text that is now safe to show; after a stop string, nothing more."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.held, self.pending = self.pending[: min(hits)], self.pending[min(hits) :], ""
            return out
        longest = len(self.pending)  # a held tail is at most what is pending: each step costs what is held
        hold = max(
            (k for s in self.stops for k in range(1, min(len(s), longest + 1)) if self.pending.endswith(s[:k])),
            default=0,
        )
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out


class Utf8Tables:
    """What each byte piece allows after it, so sampled byte pieces stay valid UTF-8.

    Subword models fall back to bytes for rare characters; an unlucky draw could otherwise write a stray
    or overlong byte, which decodes to a replacement character. A row's place in a character is
    (continuation bytes still due, lowest and highest byte allowed next): `Row.utf8`.
    """

    # The first continuation byte after these leads has a narrower range (no overlongs, no surrogates).
    FIRST = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
    BETWEEN = (0, 0x80, 0xBF)  # a row between characters

    def __init__(self, byte_of: dict[int, int], vocab_size: int, device: torch.device) -> None:
        def table(fill: int) -> Tensor:
            return torch.full((vocab_size,), fill, dtype=torch.long)

        value, need, lo, hi = table(-1), table(0), table(0x80), table(0xBF)
        for i, b in byte_of.items():
            value[i] = b
            need[i] = 1 if 0xC2 <= b <= 0xDF else 2 if 0xE0 <= b <= 0xEF else 3 if 0xF0 <= b <= 0xF4 else 0
            lo[i], hi[i] = self.FIRST.get(b, (0x80, 0xBF))
        stray = (value >= 0x80) & (need == 0)  # continuation bytes and bytes that never occur
        self.value, self.need, self.lo, self.hi = (t.to(device) for t in (value, need, lo, hi))
        self.outside = stray.to(device)  # banned between characters

    def mask(self, logits: Tensor, at: Tensor) -> None:
        """Inside a character only its allowed continuation bytes; between characters no stray byte. `at` (B, 3)."""
        inside = (self.value < at[:, 1:2]) | (self.value > at[:, 2:3])  # (B, V)
        logits.masked_fill_(torch.where(at[:, :1] > 0, inside, self.outside), -torch.inf)

    def advance(self, at: Tensor, ids: Tensor) -> Tensor:
        """Each row's place (B, 3) after writing `ids` (B,)."""
        within = at[:, 0] > 0
        due = torch.where(within, at[:, 0] - 1, self.need[ids])
        return torch.stack([due, torch.where(within, 0x80, self.lo[ids]), torch.where(within, 0xBF, self.hi[ids])], 1)


@dataclass
class Row:
    """One stream being written: its settings, its draw, its decoding, and how far it has come."""

    config: SampleConfig
    rng: torch.Generator  # rows that share one draw from it as one batch, in row order
    decoder: StreamDecoder
    stop: StopMatcher
    left: int  # characters it may still write
    keep_stop: bool = False  # the stop string it ends at is part of its text (the state has read it)
    recent: list[int] = field(default_factory=list)  # with penalties: the last ids written, oldest first
    counts: Tensor | None = None  # (V,) with penalties: how often each id is in `recent`
    utf8: tuple[int, int, int] = Utf8Tables.BETWEEN
    finish: str | None = None  # "stop" (a stop string) or "length"; None while it writes


class Writer:
    """The rows of one model: its banned ids and UTF-8 tables, and the two halves of a step."""

    def __init__(self, tokenizer: Tokenizer, device: torch.device) -> None:
        self.tokenizer, self.device = tokenizer, device
        self.banned = tokenizer.banned_ids()
        self._banned = torch.tensor(self.banned, dtype=torch.long, device=device)
        byte_of = tokenizer.byte_pieces()
        self.utf8 = Utf8Tables(byte_of, tokenizer.vocab_size, device) if byte_of else None

    def row(
        self, config: SampleConfig, rng: torch.Generator, recent: Tensor | None = None, keep_stop: bool = False
    ) -> Row:
        """A row that writes with `config`, drawing from `rng`; `recent` (n,) are ids written before it."""
        row = Row(config, rng, self.tokenizer.decoder(), StopMatcher(config.stop), config.length, keep_stop)
        if config.penalties is not None:
            row.recent = [] if recent is None else recent.tolist()
            row.counts = torch.zeros(self.tokenizer.vocab_size, device=self.device)
            seen = torch.tensor(row.recent, dtype=torch.long, device=self.device)
            row.counts.index_put_((seen,), torch.tensor(1.0, device=self.device), accumulate=True)
        if config.length <= 0:
            row.finish = "length"
        return row

    def draw(self, rows: Sequence[Row], logits: Tensor) -> Tensor:
        """One id (B,) for each row of `logits` (B, V), which is left as it was."""
        logits = logits.to(torch.float32, copy=True)  # (B, V), masked in place below
        penalized = [b for b, r in enumerate(rows) if r.counts is not None]
        if penalized:
            counts = torch.stack([rows[b].counts for b in penalized])  # (P, V)
            where = {b: k for k, b in enumerate(penalized)}  # row -> its place in `counts`
            for setting, members in _groups(rows, penalized, "penalties").items():
                at = torch.tensor(members, device=self.device)
                logits[at] = penalize(logits[at], counts[[where[b] for b in members]], **dict(setting))
        if self.banned:
            logits.index_fill_(1, self._banned, -torch.inf)
        if self.utf8:
            place = torch.tensor([r.utf8 for r in rows], device=self.device)  # (B, 3)
            self.utf8.mask(logits, place)
        groups = _groups(rows, range(len(rows)), "drawing")
        if len(groups) == 1:
            ids = sample(logits, **dict(next(iter(groups))), generator=_rngs(rows))
        else:
            ids = torch.empty(len(rows), dtype=torch.long, device=self.device)
            for setting, members in groups.items():
                at = torch.tensor(members, device=self.device)
                ids[at] = sample(logits[at], **dict(setting), generator=_rngs([rows[b] for b in members]))
        if self.utf8:
            for r, after in zip(rows, self.utf8.advance(place, ids).tolist()):
                r.utf8 = tuple(after)
        if penalized:
            self._remember([rows[b] for b in penalized], counts, ids[penalized])
        return ids

    def _remember(self, rows: list[Row], counts: Tensor, ids: Tensor) -> None:
        """Each row's window of recent ids with its new id (P,) added and, past its window, the oldest dropped."""
        rows_at = torch.arange(len(rows), device=self.device)
        counts.index_put_((rows_at, ids), torch.tensor(1.0, device=self.device), accumulate=True)
        old_rows, old_ids = [], []
        for k, (r, token) in enumerate(zip(rows, ids.tolist())):
            r.recent.append(token)
            while len(r.recent) > r.config.repeat_window:
                old_rows.append(k)
                old_ids.append(r.recent.pop(0))
        if old_rows:
            at = (torch.tensor(old_rows, device=self.device), torch.tensor(old_ids, device=self.device))
            counts.index_put_(at, torch.tensor(-1.0, device=self.device), accumulate=True)
        for k, r in enumerate(rows):
            r.counts = counts[k]

    def emit(self, rows: Sequence[Row], ids: Tensor) -> list[str]:
        """Each row's text from its id of this step ("" for none); a row ends at a stop string or its length."""
        out = []
        for r, token in zip(rows, ids.tolist()):
            if r.finish is not None:
                out.append("")
                continue
            text = r.stop.feed(r.decoder.feed(token))[: r.left]
            r.left -= len(text)
            if r.stop.stopped:
                r.finish = "stop"
                text += r.stop.held if r.keep_stop else ""
            elif r.left <= 0:
                r.finish = "length"
            out.append(text)
        return out


def recent_ids(rows: Sequence[Row]) -> Tensor | None:
    """The rows' windows of recent ids as one (B, n) batch, where they are all of one length (else None)."""
    if not rows or rows[0].counts is None or len({len(r.recent) for r in rows}) != 1:
        return None
    return torch.tensor([r.recent for r in rows], dtype=torch.long, device=rows[0].counts.device)


def _groups(rows: Sequence[Row], members, settings: str) -> dict[tuple, list[int]]:
    """The row numbers in `members` by their configs' `settings` ("drawing" or "penalties") as (name, value)
    pairs: the rows of a group go through one call."""
    groups: dict[tuple, list[int]] = {}
    for b in members:
        groups.setdefault(tuple(getattr(rows[b].config, settings).items()), []).append(b)
    return groups


def _rngs(rows: Sequence[Row]) -> torch.Generator | list[torch.Generator]:
    """One generator for rows that share it (one draw for the batch), else each row's own."""
    first = rows[0].rng
    return first if all(r.rng is first for r in rows) else [r.rng for r in rows]
