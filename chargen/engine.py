"""The serving engine: every stream in flight stepped together, one batched model step per character for all.

A request's streams join between steps and leave between steps (done, stopped, or their
client gone); nothing waits for a lock held by another request. The model step runs in a
worker thread, so the event loop goes on accepting requests and sending text meanwhile.
Each stream draws from its own random generator, so a seeded request writes the same text
whether it runs alone or beside others (up to the last bits of a batched matrix product).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import torch

from chargen.config import SampleConfig
from chargen.generate import Generator, Primed, StopMatcher, sample

logger = logging.getLogger(__name__)


@dataclass
class Stream:
    """One sample being written: its state, its settings, and the queue its text goes to."""

    primed: Primed  # (1, ...) state and next-token logits; advanced in place
    config: SampleConfig
    rng: torch.Generator
    stop: StopMatcher
    decoder: object
    left: int
    queue: asyncio.Queue  # (stream, piece) as text is written, then (stream, None) at its end
    index: int = 0  # among the streams of its request
    text: list[str] = field(default_factory=list)
    finish: str | None = None  # "stop" (a stop string) or "length"; None while running
    cancelled: bool = False  # the client is gone: leave at the next step
    steps: int = 0

    @property
    def done(self) -> bool:
        return self.finish is not None or self.cancelled


class Engine:
    """Steps all live streams of one model together until each ends."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.streams: list[Stream] = []
        self.peak = 0  # the most streams stepped together so far
        self.steps = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(
        self, primed: Primed, config: SampleConfig, rng: torch.Generator, queue: asyncio.Queue, index: int = 0
    ) -> Stream:
        """A new stream from `primed` (a batch of one, which the stream then owns), stepped from the next step;
        its text goes to `queue`."""
        decoder = self.generator.tokenizer.decoder()
        stream = Stream(primed, config, rng, StopMatcher(config.stop), decoder, config.length, queue, index)
        if config.length == 0:
            self._end(stream, "length")
        else:
            self.streams.append(stream)
            self._wake.set()
        return stream

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.streams:
                live = tuple(s for s in self.streams if not s.cancelled)  # streams added meanwhile wait a step
                self.streams = [s for s in self.streams if not s.cancelled]
                if not live:
                    break
                self.peak = max(self.peak, len(live))
                try:
                    pieces = await asyncio.to_thread(self._step, live)
                except Exception:  # a fault of the engine's own: end these streams rather than hang them
                    logger.exception("a step of %d streams failed; they end with finish_reason 'error'", len(live))
                    pieces = [""] * len(live)
                    for stream in live:
                        stream.finish = "error"
                self.steps += 1
                for stream, piece in zip(live, pieces):
                    if piece and not stream.cancelled:
                        stream.text.append(piece)
                        stream.queue.put_nowait((stream, piece))
                    if stream.finish is not None:
                        stream.queue.put_nowait((stream, None))
                self.streams = [s for s in self.streams if not s.done]

    @torch.inference_mode()
    def _step(self, live: tuple[Stream, ...]) -> list[str]:
        """Draw one token for each stream, then one model step for all of them; the text each one shows."""
        model, banned = self.generator.model, self.generator._banned_ids
        ids = []
        for s in live:
            logits = s.primed.logits.clone()
            if len(banned):
                logits.index_fill_(1, banned, -torch.inf)
            c = s.config
            ids.append(sample(logits, c.temp, c.top_k, c.top_p, s.rng, c.min_p))
        ids = torch.cat(ids)  # (B,)
        state = tuple(torch.cat([s.primed.state[i] for s in live], 1) for i in range(len(live[0].primed.state)))
        logits, state = model.step(ids, state)
        pieces = []
        for b, s in enumerate(live):
            s.primed.logits = logits[b : b + 1]
            s.primed.state = tuple(part[:, b : b + 1] for part in state)
            s.steps += 1
            piece = s.stop.feed(s.decoder.feed(int(ids[b])))[: s.left]
            s.left -= len(piece)
            if s.stop.stopped:
                s.finish = "stop"
            elif s.left <= 0:
                s.finish = "length"
            if s.finish == "length":
                piece += s.stop.flush()[: max(s.left, 0)]
            pieces.append(piece)
        return pieces

    @staticmethod
    def _end(stream: Stream, why: str) -> None:
        stream.finish = why
        stream.queue.put_nowait((stream, None))
