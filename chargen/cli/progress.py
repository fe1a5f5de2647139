"""The training progress bar: step, loss, val bpc, chars/s and ETA, on the stderr console."""

from __future__ import annotations

import os
import time

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from chargen.cli.console import ANSI, rate, stderr
from chargen.config import format_duration
from chargen.training.trainer import Reporter, Trainer


class TrainProgress(Reporter):
    """A live bar with step, loss, val bpc, chars/s and ETA, and one line per evaluation."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(bar_width=30),
            TextColumn("step {task.fields[step]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val bpc {task.fields[bpc]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=stderr(),
            transient=True,
        )
        self.task = self.progress.add_task("train", total=1000, step=0, loss="-", bpc="-", speed="-")
        self._t0, self._tokens0 = 0.0, 0
        self._reading: Progress | None = None  # a bar for reading the corpus, once that takes over a second
        self._read_since: dict[str, float] = {}  # when each pass over the corpus began

    def abandoned(self) -> None:
        """The bar hid the cursor: show it again (an escape code, not the console, whose lock a step may hold)."""
        os.write(2, (ANSI["cursor"] if os.isatty(2) else "").encode() + b"\nstopping without saving\n")

    def reading(self, what: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        since = self._read_since.setdefault(what, now)
        if self._reading is None:
            if now - since < 1.0:
                return
            self._reading = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=30),
                TextColumn("{task.fields[amount]}  {task.fields[speed]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=stderr(),
                transient=True,
            )
            self._read_task = self._reading.add_task(what, total=total, amount="", speed="")
            self._reading.start()
        amount = f"{done / 1e6:,.0f}M" + (f" of {total / 1e6:,.0f}M chars" if total else " chars")
        self._reading.update(
            self._read_task,
            description=what,
            completed=done,
            total=total,
            amount=amount,
            speed=f"{done / max(now - since, 1e-9) / 1e6:,.0f}M chars/s",
        )
        if total is not None and done >= total:
            self._reading.stop()
            self._reading = None

    def note(self, text: str) -> None:
        self.progress.console.print(escape(text), style="yellow")

    def start(self, trainer: Trainer) -> None:
        if self._reading is not None:
            self._reading.stop()
        self._t0, self._tokens0 = time.perf_counter(), trainer.tokens_read
        self.progress.start()

    def step(self, trainer: Trainer) -> None:
        p = trainer.position
        fields = {"step": p.step}
        if p.step % 20 == 0 and (loss := trainer.latest_loss()) is not None:  # a device sync: not every step
            fields["loss"] = f"{loss:.3f}"
            tokens = (trainer.tokens_read - self._tokens0) * trainer.ranks.world  # every rank reads as many
            fields["speed"] = rate(tokens * trainer.chars_per_token / max(time.perf_counter() - self._t0, 1e-9))
        self.progress.update(self.task, completed=1000 * trainer.progress(), **fields)

    def evaluated(self, trainer: Trainer, record: dict) -> None:
        self.progress.update(self.task, bpc=f"{record['val_bpc']:.3f}")
        train = record["train_loss"]
        self.progress.console.print(
            f"step {record['step']:>6}  epoch {record['epoch']:6.2f}  "
            f"train {'-' if train is None else f'{train:.4f}'}  "
            f"val {record['val_loss']:.4f} nats/char ({record['val_bpc']:.4f} bpc)  "
            f"{rate(record['chars_per_sec'])}  {format_duration(record['elapsed_s'])}",
            highlight=False,
        )

    def end(self, trainer: Trainer) -> None:
        self.progress.stop()
