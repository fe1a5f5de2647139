"""Training on many processes with torch.distributed (launched by torchrun): who owns which streams, and sums.

A run of N processes trains one model on the same global batch of `--batch-size` streams as one
process would: rank r owns the contiguous rows [r*B/N, (r+1)*B/N) of it and carries their state;
DistributedDataParallel averages the gradients. Decisions that must agree (the clock of a timed
budget, a Ctrl-C, a loss that stopped being finite) are rank 0's, shared every step. Only rank 0
writes files or talks; the checkpoint holds every rank's stream states in global order, so a run
resumes exactly on any number of processes that divides its batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(seconds=int(os.environ.get("CHARGEN_DIST_TIMEOUT", "300")))  # a rank gone: fail, don't hang


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank `rank` of `world`."""

    rank: int = 0
    world: int = 1
    local: int = 0  # the rank on this machine: which GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        """How the ranks talk: "nccl" between GPUs, "gloo" on CPUs; "none" for one process."""
        return dist.get_backend() if self.world > 1 else "none"

    def rows(self, batch: int) -> slice:
        """The streams of a global batch this rank owns."""
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def shared(self, elapsed: float, stopping: bool, finite: bool) -> tuple[float, bool, bool]:
        """Rank 0's clock, and whether any rank was interrupted or saw a loss that is not finite."""
        if self.world == 1:
            return elapsed, stopping, finite
        values = [elapsed if self.main else 0.0, float(stopping), float(not finite)]
        t = torch.tensor(values, dtype=torch.float64, device=_device())
        dist.all_reduce(t)
        return float(t[0]), bool(t[1] > 0), not bool(t[2] > 0)

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=_device())
        dist.all_reduce(t)  # SUM, never AVG
        return float(t[0])

    def gather_rows(self, part: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of a state part (layers, rows, hidden), in rank order: the global batch."""
        if self.world == 1:
            return part
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part.contiguous())
        return torch.cat(parts, 1)

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object), on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = Ranks()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def peer_gone(e: BaseException) -> bool:
    """Whether `e` is a collective that failed because another process of the run went away (killed, or crashed):
    gloo says so in a plain RuntimeError, NCCL in a DistError."""
    gone = ("Connection closed by peer", "Connection reset by peer", "remote worker")
    return isinstance(e, dist.DistError) or any(s in str(e) for s in gone)


def setup(device: str) -> Ranks:
    """The Ranks of this process: one process alone, or a rank of torchrun's run (joined here)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    if not dist.is_initialized():
        use_gpu = device in ("cuda", "auto") and torch.cuda.is_available()
        if use_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_gpu else "gloo", timeout=TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
