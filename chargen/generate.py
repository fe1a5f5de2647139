"""Generation: a pure sampling function of logits, and a stateful Generator that streams text.

`sample` holds the only random draw. `Generator` feeds a prime through the model, then
steps one token at a time for one or many streams in one batch, decoding each stream as
it goes and holding back text that might be the start of a stop string.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from chargen import checkpoint
from chargen.checkpoint import ModelCheckpoint
from chargen.config import DEFAULT_DEVICE, SampleConfig, as_text
from chargen.errors import SettingError
from chargen.model import CharLM, State, resolve_device
from chargen.tokenizer import Tokenizer

if TYPE_CHECKING:
    from chargen.dynamic import Learner


def sample(
    logits: Tensor,
    temperature: float = 1.0,
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
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class Utf8Guard:
    """Keeps sampled byte pieces valid UTF-8: each lead byte is followed by exactly the bytes it allows.

    Subword models fall back to bytes for rare characters; an unlucky draw could otherwise
    write a stray or overlong byte, which decodes to a replacement character.
    """

    # The first continuation byte after these leads has a narrower range (no overlongs, no surrogates).
    FIRST = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}

    def __init__(self, byte_of: dict[int, int], vocab_size: int, batch: int, device: torch.device) -> None:
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
        self.left = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) continuation bytes still due
        self.next_lo = torch.full((batch,), 0x80, dtype=torch.long, device=device)
        self.next_hi = torch.full((batch,), 0xBF, dtype=torch.long, device=device)

    def mask(self, logits: Tensor) -> None:
        """Inside a character only its allowed continuation bytes; between characters no stray byte."""
        inside = (self.value < self.next_lo[:, None]) | (self.value > self.next_hi[:, None])  # (B, V)
        logits.masked_fill_(torch.where(self.left[:, None] > 0, inside, self.outside), -torch.inf)

    def advance(self, ids: Tensor) -> None:
        within = self.left > 0
        self.next_lo = torch.where(within, 0x80, self.lo[ids])
        self.next_hi = torch.where(within, 0xBF, self.hi[ids])
        self.left = torch.where(within, self.left - 1, self.need[ids])


@dataclass
class Primed:
    """What a prime left behind: the state after it and the logits for the next token."""

    state: State
    logits: Tensor  # (B, V)
    unknown: list[str] = field(default_factory=list)
    recent: Tensor | None = None  # (B, <= repeat_window) the last ids written, for the penalties

    def copy(self) -> Primed:
        """A snapshot that later steps from the original do not change."""
        return Primed(
            tuple(s.clone() for s in self.state),
            self.logits.clone(),
            list(self.unknown),
            None if self.recent is None else self.recent.clone(),
        )

    def select(self, b: int) -> Primed:
        """Stream `b` alone, as a batch of one."""
        recent = None if self.recent is None else self.recent[b : b + 1].clone()
        return Primed(tuple(s[:, b : b + 1].clone() for s in self.state), self.logits[b : b + 1].clone(), [], recent)


PRIME_WINDOW = 4096  # tokens of a prime fed at once: memory stays flat however long the prime


class Generator:
    """A trained model ready to write: `generate` for the API, `stream` for the CLI and REPL."""

    def __init__(
        self,
        model: CharLM,
        tokenizer: Tokenizer,
        device: torch.device | str = "cpu",
        checkpoint: ModelCheckpoint | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        """`dtype` bfloat16 runs weights, state and logits in bf16: many streams at once go about
        twice as fast where the hardware has bf16 arithmetic, and the text differs from fp32's.
        `checkpoint` is what the model was read from, without its weights (configs, corpus, metrics)."""
        self.device = resolve_device(device)
        self.model, self.tokenizer = model.to(self.device, dtype).eval(), tokenizer
        self.checkpoint = checkpoint
        lines = checkpoint is not None and checkpoint.train_config.lines
        self.line_state = checkpoint.train_config.line_state if lines else None  # reset or carry, in line mode
        self._banned = tokenizer.banned_ids()
        self._banned_ids = torch.tensor(self._banned, dtype=torch.long, device=self.device)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str = DEFAULT_DEVICE, dtype: torch.dtype = torch.float32
    ) -> Generator:
        device = resolve_device(device)  # a bad argument is told before the file is read
        ckpt = checkpoint.read(path)
        model = CharLM(ckpt.vocab_size, ckpt.model_config)
        model.load_state_dict(ckpt.weights)  # the shapes were checked when it was read
        kept = replace(ckpt, weights={}, optimizer=None, state=None, rng=None, cuda_rng=None)  # no second copy
        return cls(model, ckpt.tokenizer, device, checkpoint=kept, dtype=dtype)

    def describe(self) -> str:
        """What this model is, in one line, for `chat` and `/show`."""
        if self.checkpoint is None:
            return f"{self.model.config.summary()}, {self.model.num_parameters():,} parameters"
        return f"{self.checkpoint.path}: {self.checkpoint.describe()}"

    # -- state ---------------------------------------------------------------------------------

    def prime(self, text: str, batch: int = 1, primed: Primed | None = None, learner: Learner | None = None) -> Primed:
        """Feed `text` through the model (after `primed`, if given); unknown characters are skipped.

        The text runs as one stream, a window at a time, and its final state is copied to
        `batch` streams: memory stays flat however long the prime and however many samples.
        With `learner` (whose model is this one), the model learns from the prime as it reads it."""
        as_text("prime", text)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise SettingError(f"batch must be a whole number, 1 or more, not {batch!r}", "batch")
        unknown = self.tokenizer.unknown(text)
        ids = self.tokenizer.encode(text)
        ids = ids[~np.isin(ids, self._banned)].astype(np.int64)
        if primed is None:
            if not len(ids):  # start from a line break, the most neutral context a text has
                ids = np.array([i for i in self.tokenizer.encode("\n").tolist() if i not in self._banned] or [0])
            state = self.model.initial_state(1, self.device)
        else:
            batch = primed.logits.shape[0]
            if not len(ids):
                return Primed(primed.state, primed.logits, unknown)
            state = primed.state
        if learner is not None and len(ids) > 1:
            if state[0].shape[1] != 1:
                raise SettingError("a model learns from a prime in one stream: prime first, then fan out", "batch")
            _, state = learner.read(ids, state)  # learns from every window but the last token's successor
            ids = ids[-1:]
        with torch.inference_mode():
            return self._feed(ids, state, batch, unknown)

    def _feed(self, ids: np.ndarray, state: State, batch: int, unknown: list[str]) -> Primed:
        logits = None
        for lo in range(0, len(ids), PRIME_WINDOW):
            x = torch.from_numpy(ids[lo : lo + PRIME_WINDOW]).to(self.device)
            out, state = self.model(x.expand(state[0].shape[1], -1), state)  # (B, T, V)
            logits = out[:, -1]
        if state[0].shape[1] != batch:  # one stream fanned out to `batch` identical ones
            state = tuple(s.expand(-1, batch, -1).contiguous() for s in state)
            logits = logits.expand(batch, -1).contiguous()
        return Primed(state, logits.clone(), unknown)

    # -- writing -------------------------------------------------------------------------------

    def stream(
        self,
        primed: Primed,
        config: SampleConfig,
        generators: list[torch.Generator] | None = None,
        keep_stop: bool = False,
    ) -> Iterator[tuple[int, str]]:
        """(stream, text) pieces as they are decoded, until every stream has `length` characters or a stop.

        `primed` is advanced in place, so the caller holds the state after the last token
        (a chat turn carries on from it). The draw comes from `generators` (one per stream,
        advanced in place, so a later call goes on where this one stopped) or, without them,
        from one generator seeded with `config.seed`. The stop string is left out of the text,
        unless `keep_stop` (a chat keeps it, as the state has read it).
        """
        for pieces in self._steps(primed, config, generators, keep_stop):
            yield from pieces

    def rng(self, seed: int | None) -> torch.Generator:
        """A generator on this model's device: seeded, or fresh randomness without touching torch's global one."""
        g = torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        return g

    @torch.inference_mode()
    def _steps(
        self, primed: Primed, config: SampleConfig, generators: list[torch.Generator] | None, keep_stop: bool
    ) -> Iterator[list[tuple[int, str]]]:
        """The pieces of each step together, so inference mode is entered once a step, not once a piece."""
        batch = primed.logits.shape[0]
        g = generators or self.rng(config.seed)
        decoders = [self.tokenizer.decoder() for _ in range(batch)]
        stops = [StopMatcher(config.stop) for _ in range(batch)]
        left = [config.length] * batch
        logits, state = primed.logits, primed.state
        byte_of = self.tokenizer.byte_pieces()
        guard = Utf8Guard(byte_of, self.tokenizer.vocab_size, batch, self.device) if byte_of else None
        penalties = config.repeat_penalty != 1 or config.presence_penalty or config.frequency_penalty
        counts = self._counts(primed.recent, batch) if penalties else None  # (B, V)
        while any(n > 0 and not s.stopped for n, s in zip(left, stops)):
            if penalties:
                logits = penalize(
                    logits, counts, config.repeat_penalty, config.presence_penalty, config.frequency_penalty
                )
            if self._banned:
                logits.index_fill_(1, self._banned_ids, -torch.inf)
            if guard:
                guard.mask(logits)
            ids = sample(logits, config.temp, config.top_k, config.top_p, g, config.min_p)  # (B,)
            if guard:
                guard.advance(ids)
            if penalties:
                primed.recent, counts = self._remember(primed.recent, counts, ids, config.repeat_window)
            pieces = []
            for b, token in enumerate(ids.tolist()):
                if left[b] <= 0 or stops[b].stopped:
                    continue
                text = stops[b].feed(decoders[b].feed(token))[: left[b]]
                left[b] = 0 if stops[b].stopped else left[b] - len(text)
                if text:
                    pieces.append((b, text))
            # Step before showing: if the reader stops here (Ctrl-C), the state holds every token shown.
            logits, state = self.model.step(ids, state)
            primed.logits, primed.state = logits, state
            yield pieces
        ends = [s.flush()[: max(left[b], 0)] + (s.held if keep_stop else "") for b, s in enumerate(stops)]
        yield [(b, tail) for b, tail in enumerate(ends) if tail]

    def _counts(self, recent: Tensor | None, batch: int) -> Tensor:
        counts = torch.zeros(batch, self.tokenizer.vocab_size, device=self.device)
        if recent is not None:
            counts.scatter_add_(1, recent, torch.ones_like(recent, dtype=counts.dtype))
        return counts

    @staticmethod
    def _remember(recent: Tensor | None, counts: Tensor, ids: Tensor, window: int) -> tuple[Tensor, Tensor]:
        """The window of recent ids with `ids` (B,) added and, past `window`, the oldest dropped; counts to match."""
        recent = ids[:, None] if recent is None else torch.cat([recent, ids[:, None]], 1)  # (B, n)
        counts.scatter_add_(1, ids[:, None], torch.ones(len(ids), 1, device=counts.device))
        while recent.shape[1] > window:
            counts.scatter_add_(1, recent[:, :1], -torch.ones(len(ids), 1, device=counts.device))
            recent = recent[:, 1:]
        return recent, counts

    def sample_lines(
        self, config: SampleConfig, prime: str = "", n: int = 1, learner: Learner | None = None
    ) -> list[str]:
        """`n` whole examples, each starting with `prime`, from a line-mode model: from a fresh state and the
        line boundary, up to the next line end (or `config.length` characters, or a stop string)."""
        if "\n" in prime:
            raise SettingError("a line-mode prime is the start of one line: it cannot hold a line break", "prime")
        texts = [prime] * n
        stop = ("\n", *config.stop)
        for b, piece in self.stream(self.prime("\n" + prime, batch=n, learner=learner), replace(config, stop=stop)):
            texts[b] += piece
        return texts

    def generate(self, prime: str = "", **settings) -> Iterator[str]:
        """Text after `prime`, yielded piece by piece as it is written.

        `settings` are SampleConfig's fields (length, temp, top_k, top_p, min_p, seed, stop, the
        penalties), with its defaults; `stop` is one string or several."""
        config = SampleConfig.of(**settings)
        for _, text in self.stream(self.prime(prime), config):
            yield text
