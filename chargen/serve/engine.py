"""The serving engine: every stream in flight stepped together, one batched model step per character for all.

The streams live as rows of one batch (their states side by side), stepped back to back by a
thread of the engine's own: a request's streams join between steps and leave between steps
(done, stopped, or their client gone), and nothing waits for a lock held by another request.
The text of each step goes to the event loop in one call, which puts it on each request's
queue. Each stream draws from its own random generator, so a seeded request writes the same
text whether it runs alone or beside others (up to the last bits of a batched matrix product).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from chargen.config import SampleConfig
from chargen.generate import Generator, Primed
from chargen.writer import Row

logger = logging.getLogger(__name__)
DELIVER_EVERY = 0.02  # seconds: text goes to the event loop at most this often (50 times a second per stream)


@dataclass
class Stream:
    """One sample being written: its writer row, the queue its text goes to, and what it has written."""

    primed: Primed  # the state it starts from; once it ends, the state after its last character
    row: Row  # its settings, draw, decoding, stop and length (the writer's)
    queue: asyncio.Queue  # (stream, piece) as text is written, then (stream, None) at its end
    index: int = 0  # among the streams of its request
    text: list[str] = field(default_factory=list)
    cancelled: bool = False  # the client is gone: leave at the next step

    @property
    def finish(self) -> str | None:
        """Why it ended: "stop" (a stop string), "length" or "error"; None while it writes."""
        return self.row.finish


class Engine:
    """Steps all live streams of one model together until each ends."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.rows: list[Stream] = []  # the batch, in row order (the engine thread's alone)
        self.batch: Primed | None = None  # every row's state and next-token logits, in row order
        self.peak = 0  # the most streams stepped together so far
        self.steps = 0
        self._pending: list[Stream] = []  # added, not yet in the batch
        self._outbox: list[tuple[Stream, str | None]] = []  # text written since the last delivery
        self._delivered = 0.0
        self._lock = threading.Lock()
        self._work = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def streams(self) -> int:
        """Streams in flight: in the batch or about to join it."""
        return len(self.rows) + len(self._pending)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="chargen-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._closing = True
        self._work.set()
        if self._thread:
            await asyncio.to_thread(self._thread.join)

    def add(
        self, primed: Primed, config: SampleConfig, rng: torch.Generator, queue: asyncio.Queue, index: int = 0
    ) -> Stream:
        """A new stream from `primed` (a batch of one, which the stream then owns), stepped from the next step;
        its text goes to `queue`."""
        recent = None if primed.recent is None else primed.recent[0]
        stream = Stream(primed, self.generator.writer.row(config, rng, recent), queue, index)
        if stream.finish is not None:  # nothing to write
            queue.put_nowait((stream, None))
            return stream
        with self._lock:
            self._pending.append(stream)
        self._work.set()
        return stream

    # -- the engine's thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            self._work.wait()
            self._work.clear()
            while not self._closing and (self._join() or self.rows):
                try:
                    ended = self._step()
                except Exception:  # a fault of the engine's own: end these streams rather than hang them
                    logger.exception("a step of %d streams failed; they end with finish_reason 'error'", len(self.rows))
                    out = [(s, None) for s in self.rows]
                    for s in self.rows:
                        s.row.finish = "error"
                    self.rows, self.batch = [], None
                    self._deliver(out)
                    continue
                self._leave(ended)

    def _join(self) -> bool:
        """Move the streams added since the last step into the batch; True if any joined."""
        with self._lock:
            fresh, self._pending = self._pending, []
        if not fresh:
            return False
        parts = [s.primed for s in fresh]
        self.batch = Primed.cat(parts if self.batch is None else [self.batch, *parts])
        self.rows += fresh
        return True

    def _leave(self, ended: list[int]) -> None:
        """Drop the rows of streams that ended or whose client left."""
        gone = set(ended) | {b for b, s in enumerate(self.rows) if s.cancelled}
        if not gone:
            return
        keep = [b for b in range(len(self.rows)) if b not in gone]
        self.rows = [self.rows[b] for b in keep]
        self.batch = self.batch.take(keep) if keep else None

    @torch.inference_mode()
    def _step(self) -> list[int]:
        """Draw one token for every row, step the model once for all of them, send the text on; the rows
        that ended."""
        writer, batch, rows = self.generator.writer, self.batch, [s.row for s in self.rows]
        self.peak = max(self.peak, len(rows))
        ids = writer.draw(rows, batch.logits)
        batch.logits, batch.state = self.generator.model.step(ids, batch.state)
        self.steps += 1
        out, ended, first = [], [], False  # first: some stream wrote its first text, which goes out at once
        for b, (s, piece) in enumerate(zip(self.rows, writer.emit(rows, ids))):
            if s.cancelled:
                continue
            if piece:
                s.text.append(piece)
                out.append((s, piece))
                first = first or len(s.text) == 1
            if s.finish is not None:  # its state after its last character, for a session to go on from
                s.primed = batch.take([b])
                out.append((s, None))
                ended.append(b)
        self._outbox += out
        now = time.perf_counter()
        if self._outbox and (ended or first or now - self._delivered >= DELIVER_EVERY):
            self._deliver(self._outbox)
            self._outbox, self._delivered = [], now
        return ended

    def _deliver(self, items: list[tuple[Stream, str | None]]) -> None:
        """Hand a step's text to the event loop: one call for all of it."""

        def put() -> None:
            for stream, piece in items:
                stream.queue.put_nowait((stream, piece))

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(put)
