"""Generation: a stateful Generator that streams text, and the batch of primed states it writes from.

`Generator` feeds a prime through the model, then steps one token at a time for one or many
streams in one batch; each step's drawing and decoding is the writer's (`chargen.writer`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
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
from chargen.writer import Writer, recent_ids

if TYPE_CHECKING:
    from chargen.dynamic import Learner


@dataclass
class Primed:
    """What a prime left behind: the state after it and the logits for the next token."""

    state: State
    logits: Tensor  # (B, V)
    unknown: list[str] = field(default_factory=list)
    recent: Tensor | None = None  # (B, <= repeat_window) the last ids written, for the penalties

    def copy(self) -> Primed:
        """A snapshot that later steps from the original do not change."""
        return self.take(range(self.logits.shape[0]))

    def take(self, rows: Sequence[int] | range) -> Primed:
        """The streams `rows`, in that order, as a batch of their own (copies)."""
        at = torch.tensor(list(rows), dtype=torch.long, device=self.logits.device)
        recent = None if self.recent is None else self.recent.index_select(0, at)
        unknown = list(self.unknown) if len(at) == self.logits.shape[0] else []
        state = tuple(s.index_select(1, at) for s in self.state)
        return Primed(state, self.logits.index_select(0, at), unknown, recent)

    def expand(self, n: int) -> Primed:
        """A batch of one fanned out to `n` identical streams."""
        recent = None if self.recent is None else self.recent.expand(n, -1).contiguous()
        state = tuple(s.expand(-1, n, -1).contiguous() for s in self.state)
        return Primed(state, self.logits.expand(n, -1).contiguous(), list(self.unknown), recent)

    @staticmethod
    def cat(parts: Sequence[Primed]) -> Primed:
        """The batches one after another, as one batch (without recent ids: each stream's writer row keeps its own)."""
        state = tuple(torch.cat([p.state[i] for p in parts], 1) for i in range(len(parts[0].state)))
        return Primed(state, torch.cat([p.logits for p in parts]))


PRIME_WINDOW = 4096  # tokens of a prime fed at once: memory stays flat however long the prime


class Generator:
    """A trained model ready to write: `generate` for the API, `stream` for the CLI and REPL."""

    def __init__(
        self,
        model: CharLM,
        tokenizer: Tokenizer,
        device: torch.device | str = DEFAULT_DEVICE,
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
        self.writer = Writer(tokenizer, self.device)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str = DEFAULT_DEVICE, dtype: torch.dtype = torch.float32
    ) -> Generator:
        device = resolve_device(device)  # a bad argument is told before the file is read
        ckpt = checkpoint.read(path)
        model = CharLM(ckpt.vocab_size, ckpt.model_config)
        model.load_state_dict(ckpt.weights)  # the shapes were checked when it was read
        kept = replace(ckpt, weights={}, other=None, optimizer=None, state=None, rng=None, cuda_rng=None)  # no copies
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
        ids = ids[~np.isin(ids, self.writer.banned)].astype(np.int64)
        if primed is None:
            if not len(ids):  # start from a line break, the most neutral context a text has
                ids = np.array([i for i in self.tokenizer.encode("\n").tolist() if i not in self.writer.banned] or [0])
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
        primed = Primed(state, logits.clone(), unknown)
        return primed if state[0].shape[1] == batch else primed.expand(batch)  # one stream fanned out

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
        shared = self.rng(config.seed) if generators is None else None  # one draw for the whole batch
        recent = [None] * batch if primed.recent is None else list(primed.recent)
        rows = [self.writer.row(config, shared or generators[b], recent[b], keep_stop) for b in range(batch)]
        try:
            while any(r.finish is None for r in rows):
                ids = self.writer.draw(rows, primed.logits)  # (B,)
                texts = self.writer.emit(rows, ids)
                # Step before showing: if the reader stops here (Ctrl-C), the state holds every token shown.
                primed.logits, primed.state = self.model.step(ids, primed.state)
                yield [(b, text) for b, text in enumerate(texts) if text]
        finally:
            written = recent_ids(rows)
            if written is not None:
                primed.recent = written

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
