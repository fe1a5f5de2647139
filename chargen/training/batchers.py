"""How a training run reads its corpus: windows of contiguous streams (the state carried), or batches of whole lines.

Both batchers give (x, y) windows of an epoch, say whether a window starts from a fresh state
(`resets`), and score the validation text the way they train (`val_nats`); `batcher_for` picks
the one a run's settings ask for, so the trainer has no branch of line mode's own.
"""

from __future__ import annotations

import numpy as np
import torch

from chargen.config import TrainConfig
from chargen.data import Corpus
from chargen.errors import CorpusError, SettingError
from chargen.lines import BUCKET, MAX_LINE, boundary, bounds, evaluate_lines, padded
from chargen.score import evaluate
from chargen.training.distributed import Ranks


def batcher_for(
    corpus: Corpus, config: TrainConfig, device: torch.device, ranks: Ranks, note
) -> StreamBatcher | LineBatcher:
    """The batcher of a run: whole lines from a fresh state (`--lines --line-state reset`), else carried streams
    (of lines too, in line mode); `note` tells of a batch made smaller to fit a short text."""
    if config.lines and config.line_state == "reset":
        if ranks.world > 1:
            raise SettingError("--line-state reset trains on one process: use carry with torchrun", "line_state")
        ids, seed = corpus.train, config.seed
        return LineBatcher(ids, boundary(corpus.tokenizer), config.batch_size, config.seq_len, device, seed)
    batch = fit_batch(len(corpus.train), config.batch_size, config.seq_len)
    if batch < config.batch_size:
        note(f"the training text is short: --batch-size {batch} instead of {config.batch_size}")
    if batch % ranks.world:
        raise SettingError(
            f"batch_size {batch} does not split over {ranks.world} processes: use a multiple of {ranks.world}",
            "batch_size",
        )
    return StreamBatcher(corpus.train, batch, config.seq_len, device, config.seed, ranks.rows(batch))


def fit_batch(tokens: int, batch_size: int, seq_len: int) -> int:
    """The largest batch, up to `batch_size`, that gives every stream at least one window."""
    usable = tokens - seq_len  # room for a random start offset in [0, seq_len) and the last target
    if usable < seq_len:
        raise CorpusError(
            f"the training text has {tokens} tokens, too few for one window of {seq_len}: "
            f"use a smaller --seq-len or a longer text"
        )
    return min(batch_size, usable // seq_len)


class StreamBatcher:
    """Truncated-BPTT batches: B contiguous streams, each read left to right in windows of T.

    Window k of an epoch is (x, y), both (B, T), with y the next token of every x. The
    hidden state at the end of window k is the right initial state for window k+1. Each
    epoch starts its streams at an offset in [0, T) drawn from (seed, epoch), so a window
    boundary does not fall at the same character every epoch, and resuming needs no RNG.
    """

    resets = False  # each window starts from the state the last one ended in

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, device, seed: int = 0, rows: slice = slice(None)
    ) -> None:
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rows = rows  # the streams this process reads (a rank of a distributed run owns some)
        self.local_batch = len(range(batch_size)[rows])
        usable = len(ids) - seq_len
        self.windows = usable // seq_len // batch_size  # per epoch, whatever the offset
        self.stream_len = self.windows * seq_len
        self.device = torch.device(device)
        self.last_tokens = self.local_batch * seq_len  # tokens of each window
        self._offset = (-1, 0)  # (epoch, its offset)
        if self.device.type == "cpu":
            self.ids = ids  # memory-mapped; each window is copied out as it is needed
        else:
            self.ids = torch.from_numpy(np.asarray(ids).astype(np.int64)).to(self.device)

    def offset(self, epoch: int) -> int:
        if self._offset[0] != epoch:  # drawn once per epoch, from (seed, epoch) alone
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._offset = (epoch, int(torch.randint(self.seq_len, (1,), generator=g)))
        return self._offset[1]

    def window(self, epoch: int, k: int):
        """(x, y) of window k of `epoch`, each (B, T) int64 on the device."""
        start, n = self.offset(epoch), self.batch_size * self.stream_len
        lo, hi = k * self.seq_len, (k + 1) * self.seq_len
        if isinstance(self.ids, np.ndarray):
            x = self.ids[start : start + n].reshape(self.batch_size, -1)[self.rows, lo:hi]
            y = self.ids[start + 1 : start + n + 1].reshape(self.batch_size, -1)[self.rows, lo:hi]
            return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
        x = self.ids[start : start + n].view(self.batch_size, -1)[self.rows, lo:hi]
        y = self.ids[start + 1 : start + n + 1].view(self.batch_size, -1)[self.rows, lo:hi]
        return x, y

    def val_nats(self, model, val: np.ndarray, amp: bool, ranks: Ranks) -> float:
        """Total nats of the validation text read as one carried stream per scoring row: each rank scores some
        of the streams, and their sums add up to one process's figure."""
        return ranks.sum(evaluate(model, val, self.device, amp, part=(ranks.rank, ranks.world)))


class LineBatcher:
    """Batches of whole examples, each from a fresh state: an epoch reads every training line once, in an
    order drawn from (seed, epoch), so resuming needs no RNG. A batch holds about as many tokens as a
    streaming batch of `batch_size` x `seq_len` would; lines of like length are batched together (sorted
    within groups of BUCKET batches, the batches then shuffled), so little of a batch is padding."""

    resets = True  # every batch starts from a fresh state

    def __init__(self, ids: np.ndarray, boundary: int, batch_size: int, seq_len: int, device, seed: int = 0) -> None:
        self.ids, self.seed, self.boundary = np.asarray(ids), seed, boundary
        self.at, self.ends = bounds(self.ids, boundary)
        mean = float((self.ends - self.at).mean())
        self.batch_size = int(max(1, min(len(self.at), round(batch_size * seq_len / mean))))
        self.local_batch, self.rows = self.batch_size, slice(None)  # one process reads every line
        self.windows = len(self.at) // self.batch_size  # per epoch; the few lines left over wait for the next
        self.device = torch.device(device)
        self._batches: tuple[int, np.ndarray] = (-1, np.zeros((0, 0), dtype=np.int64))
        self.last_tokens = 0  # tokens of the last batch, padding left out

    def batches(self, epoch: int) -> np.ndarray:
        """(windows, batch_size) line numbers: the batches of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.at))[: self.windows * self.batch_size]
        lengths, group = self.ends - self.at, BUCKET * self.batch_size
        for lo in range(0, len(order), group):
            part = order[lo : lo + group]
            order[lo : lo + group] = part[np.argsort(lengths[part], kind="stable")]
        return order.reshape(self.windows, self.batch_size)[rng.permutation(self.windows)]

    def window(self, epoch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of batch k of `epoch`, each (B, T) int64 on the device."""
        if self._batches[0] != epoch:
            self._batches = (epoch, self.batches(epoch))
        rows = self._batches[1][k]
        x, y = padded(self.ids, self.at[rows], self.ends[rows], self.boundary)
        self.last_tokens = int(np.minimum(self.ends[rows] - self.at[rows], MAX_LINE).sum())  # not the padding
        return x.to(self.device), y.to(self.device)

    def val_nats(self, model, val: np.ndarray, amp: bool, ranks: Ranks) -> float:
        """Total nats of the validation text: every example from a fresh state, as it was trained."""
        return evaluate_lines(model, val, self.boundary, self.device)
