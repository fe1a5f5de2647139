"""The training loop: truncated BPTT over carried state, AdamW, warm-up and cosine, evaluation, checkpoints.

A run stops when its budget (steps, epochs or wall-clock time, whichever ends first) is
spent, or when validation loss has not improved for `patience` evaluations. The learning
rate schedule is laid over the budget, so a timed run ends annealed. Everything a run needs
to continue exactly (weights, optimizer, step, data position, carried state, RNG) is in its
checkpoint. The trainer knows nothing of Click or of the terminal: it reports to a `Reporter`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from chargen import checkpoint
from chargen.checkpoint import CorpusInfo, ModelCheckpoint, Position
from chargen.config import EVAL_EVERY, EVALS, ModelConfig, TrainConfig
from chargen.data import Corpus
from chargen.errors import ChargenError, CheckpointError, SettingError, TrainingError
from chargen.files import FolderLock, atomic_write
from chargen.model import CharLM, detach, resolve_device
from chargen.score import scored_chars
from chargen.training.batchers import batcher_for
from chargen.training.distributed import SINGLE, Ranks, peer_gone


class Reporter:
    """What the trainer tells the outside world; the CLI draws a progress bar from it."""

    def start(self, trainer: Trainer) -> None: ...

    def step(self, trainer: Trainer) -> None: ...

    def evaluated(self, trainer: Trainer, record: dict) -> None: ...

    def note(self, text: str) -> None: ...

    def reading(self, what: str, done: int, total: int | None) -> None:
        """How far reading the corpus has come (characters), before training starts."""

    def end(self, trainer: Trainer) -> None: ...

    def abandoned(self) -> None:
        """A second Ctrl-C: the process ends now, without saving. Called in a signal handler: write, don't lock."""
        os.write(2, b"\nstopping without saving\n")


@dataclass
class Result:
    best_val: float  # nats/char
    best_path: Path
    last_path: Path
    step: int
    best_step: int = 0  # the step best.pt was written at
    interrupted: bool = False
    stopped_early: bool = False


class Trainer:
    clock = staticmethod(time.perf_counter)  # seconds; a test may give a clock of its own

    def __init__(
        self,
        corpus: Corpus,
        model_config: ModelConfig,
        config: TrainConfig,
        out: str | Path,
        reporter: Reporter | None = None,
        resume: ModelCheckpoint | None = None,
        ranks: Ranks = SINGLE,
        start: dict[str, torch.Tensor] | None = None,
        lineage: list[dict] | None = None,
    ) -> None:
        """`start`: weights to begin from instead of random ones (a fine-tuned run's, with `lineage` its
        ancestry, nearest first); `resume`: a checkpoint of this run to continue exactly."""
        if corpus.tokenizer.kind != config.tokenizer:
            raise SettingError(
                f"tokenizer is {config.tokenizer!r} but the corpus was encoded with {corpus.tokenizer.kind!r}: "
                "load it with chargen.training.run.load_corpus_for, or call chargen.train",
                "tokenizer",
            )
        self.corpus, self.model_config, self.config = corpus, model_config, config
        self.ranks = ranks
        self.reporter = (reporter or Reporter()) if ranks.main else Reporter()  # one process talks
        self.out = Path(out)
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and ranks.world > 1:
            self.device = torch.device("cuda", ranks.local)
        self.amp = config.amp and self.device.type == "cuda"
        torch.manual_seed(config.seed)

        if len(corpus.val) < 2:
            raise ChargenError("the validation text is too short to score: raise --val-frac or use a longer text")
        self.batcher = batcher_for(corpus, config, self.device, ranks, self.reporter.note)
        self.chars_per_token = corpus.train_chars / len(corpus.train)
        self.val_scored_chars = scored_chars(corpus.tokenizer, corpus.val, corpus.val_chars)

        self.model = CharLM(corpus.tokenizer.vocab_size, model_config).to(self.device)
        if start is not None:
            self.model.load_state_dict(start)
        else:  # a new model guesses the text's unigram first (a resumed one's weights replace this)
            self.model.start_at_unigram(corpus.train)
        self.lineage = list(lineage or [])
        self.net = self.model  # what a step runs: the model, or its DistributedDataParallel wrapper
        if ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)  # the state is an argument, no buffer
            torch.manual_seed(config.seed + ranks.rank)  # dropout masks of each rank's own; the weights are rank 0's
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=config.lr,
            betas=(0.9, 0.99),
            fused=self.device.type in ("cuda", "cpu"),  # one kernel for all parameters
        )
        self.position = Position()
        self.state = self.model.initial_state(self.batcher.local_batch, self.device)
        # with --average: a moving average of the weights, in fp32, beside them (evaluated at each evaluation)
        self.average = [p.detach().clone() for p in self.model.parameters()] if config.average else None
        self.averaged = False  # whether the average scored better at the last evaluation
        self.metrics: list[dict] = []
        self._losses: list[torch.Tensor] = []  # since the last evaluation, still on the device
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)  # every loss so far was finite
        self._stopping, self._saving = False, False  # Ctrl-C seen; a checkpoint being written
        self.tokens_read = 0  # tokens trained on by this process, padding left out
        self._read_since, self._since = 0, self.clock()  # tokens_read and the clock at the last evaluation
        if resume is not None:
            self._restore(resume)

    # -- the budget and the schedule ---------------------------------------------------------

    def progress(self) -> float:
        """The fraction of the budget spent, in [0, 1]: the furthest of steps, epochs and time."""
        c, p = self.config, self.position
        done = [0.0]
        if c.steps:
            done.append(p.step / c.steps)
        if c.epochs:
            done.append((p.epoch + p.window / self.batcher.windows) / c.epochs)
        if c.time:
            done.append(p.elapsed / c.time)
        return min(1.0, max(done))

    def lr(self) -> float:
        """Linear warm-up over steps, times a cosine from lr to lr * min_lr_frac over the budget."""
        c = self.config
        warm = min(1.0, (self.position.step + 1) / c.warmup) if c.warmup else 1.0
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return c.lr * warm * (c.min_lr_frac + (1 - c.min_lr_frac) * cosine)

    def latest_loss(self) -> float | None:
        """The last step's training loss per character; reading it waits for the device."""
        return float(self._losses[-1]) / self.chars_per_token if self._losses else None

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop_at: int | None = None, exit_on_second_interrupt: bool = False) -> Result:
        """Train until the budget is spent (or step `stop_at`).

        Ctrl-C finishes a checkpoint being written, saves last.pt and returns. A second Ctrl-C
        while that save runs raises KeyboardInterrupt (the previous file stays whole), or, for
        the CLI (`exit_on_second_interrupt`), leaves at once with exit status 130. A loss that
        is no longer finite stops the run with TrainingError; the checkpoints already written
        (all from finite weights) are kept.
        """
        if self.ranks.main:
            self.out.mkdir(parents=True, exist_ok=True)
        lock = FolderLock(self.out) if self.ranks.main else contextlib.nullcontext()
        with lock, self._interrupts(exit_on_second_interrupt):
            # The file holds exactly this run's records: a resume drops those from after its step.
            if self.ranks.main:
                with atomic_write(self.out / "metrics.jsonl", text=True) as f:
                    f.writelines(json.dumps(record) + "\n" for record in self.metrics)
            try:
                return self._loop(stop_at)
            except RuntimeError as e:
                if self.ranks.world == 1 or not peer_gone(e):
                    raise
                raise TrainingError(
                    "another process of this torchrun run stopped (killed, or failed: its own lines say why), so "
                    f"this one stops too; the checkpoints in {self.out} are whole: go on with the same torchrun "
                    f"command and --resume {self.out / 'last.pt'}"
                ) from None

    def _loop(self, stop_at: int | None) -> Result:
        self.reporter.start(self)
        p, result = self.position, None
        start, self._since = self.clock() - p.elapsed, self.clock()
        try:
            while self.progress() < 1 and (stop_at is None or p.step < stop_at) and not self._stopping:
                self.step()
                p.elapsed = self.clock() - start
                if self.ranks.world > 1:  # every rank takes rank 0's clock, and stops with any other
                    p.elapsed, stop, finite = self.ranks.shared(p.elapsed, self._stopping, bool(self._finite))
                    self._stopping, self._finite = self._stopping or stop, self._finite & finite
                if self.device.type == "cpu" or p.step % 50 == 0:  # on a GPU, a check is a host sync: not each step
                    self._check_finite()
                self.reporter.step(self)
                every = self.config.eval_every or EVAL_EVERY
                since = p.step - (self.metrics[-1]["step"] if self.metrics else 0)
                if since >= every or self.progress() >= 1 or (not self.config.eval_every and self._mark_passed()):
                    self._evaluate_and_save()
                    p.elapsed = self.clock() - start
                    if self.config.patience and p.bad_evals >= self.config.patience:
                        result = self._result(stopped_early=True)
                        break
            if self._stopping:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._stopping = True
            p.elapsed = self.clock() - start
            self._check_finite()
            self._save(self.out / "last.pt")
            result = self._result(interrupted=True)
        else:
            if not self.metrics or self.metrics[-1]["step"] != p.step:
                self._evaluate_and_save()
            result = result or self._result()
        finally:
            self.reporter.end(self)
        return result

    @contextlib.contextmanager
    def _interrupts(self, hard_exit: bool) -> Iterator[None]:
        """Ctrl-C as `run` describes it, where this thread can take signals (the main thread)."""
        self._stopping, self._saving = False, False

        def on_interrupt(signum, frame) -> None:
            if self._stopping:
                if hard_exit:
                    self.reporter.abandoned()
                    os._exit(130)
                raise KeyboardInterrupt
            self._stopping = True
            if not self._saving and self.ranks.world == 1:  # with other ranks: stop together, after this step
                raise KeyboardInterrupt

        try:
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started ignoring Ctrl-C (a script's `&`): so be it
                raise ValueError
            previous = signal.signal(signal.SIGINT, on_interrupt)
        except ValueError:  # that, or not the main thread: Python's own handling stays
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _check_finite(self) -> None:
        """Stop with TrainingError once a loss was NaN or infinite; nothing from such weights is ever saved."""
        if bool(self._finite):
            return
        p, last = self.position, self.out / "last.pt"
        kept = (
            f"{last} (step {self.metrics[-1]['step']}) holds the last good weights; resume from it with a lower "
            f"--lr: chargen train --resume {shlex.quote(str(last))} --lr {self.config.lr / 10:g}"
            if self.metrics
            else "nothing was saved; start again with a lower --lr"
        )
        raise TrainingError(
            f"the training loss stopped being a finite number by step {p.step} "
            f"(--lr {self.config.lr:g} is likely too high): training stopped; {kept}"
        )

    def step(self) -> None:
        """One training step: a window of every stream read, the loss's gradient taken, the weights updated."""
        c, p = self.config, self.position
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        x, y = self.batcher.window(p.epoch, p.window)  # (B, T) each
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, state, *seen = self.net(x, None if self.batcher.resets else self.state, bool(c.ar or c.tar))
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())  # padding (in line mode) is skipped
        self.optimizer.zero_grad(set_to_none=True)
        (loss + _activation_penalty(*seen[0], c.ar, c.tar) if seen else loss).backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip, foreach=True)
        self.optimizer.step()
        if self.average is not None:  # early on, a shorter memory: the first weights are no average worth keeping
            keep = min(c.average, (1 + p.step) / (10 + p.step))
            torch._foreach_lerp_(self.average, [w.detach() for w in self.model.parameters()], 1 - keep)
        # Truncated BPTT: the next window starts from this state's values, but its gradient stops here.
        if not self.batcher.resets:
            self.state = detach(state)
        self._losses.append(loss.detach())  # read at evaluation time: no host sync per step
        self._finite &= torch.isfinite(loss.detach())
        self.tokens_read += self.batcher.last_tokens
        p.step += 1
        p.window += 1
        if p.window == self.batcher.windows:  # a new epoch restarts every stream, at a new offset
            p.epoch, p.window = p.epoch + 1, 0
            self.state = self.model.initial_state(self.batcher.local_batch, self.device)

    def _mark_passed(self) -> bool:
        """Whether the run has passed another twentieth of its budget since it last evaluated, and evaluating
        is cheap enough to do so (the last one took under a twentieth of the time since): a run of many epochs
        needs evaluations often enough to keep its best and to stop early, whatever --eval-every says."""
        last = self.metrics[-1] if self.metrics else {"progress": 0.0, "eval_s": 0.0, "elapsed_s": 0.0}
        since = self.position.elapsed - last["elapsed_s"]
        return self.progress() - last.get("progress", 0.0) >= 1 / EVALS and last.get("eval_s", 0.0) * EVALS < since

    def _evaluate_and_save(self) -> None:
        p = self.position
        began = self.clock()
        if self.device.type == "cuda":  # steps run ahead of the host: wait for them, so chars/s is true
            torch.cuda.synchronize(self.device)
        train_time, tokens = self.clock() - self._since, self.tokens_read - self._read_since
        val_nats = self.batcher.val_nats(self.model, self.corpus.val, self.amp, self.ranks)
        val_loss, extra = val_nats / self.val_scored_chars, {}
        if self.average is not None:
            with self._averaged_weights():
                avg_nats = self.batcher.val_nats(self.model, self.corpus.val, self.amp, self.ranks)
            extra = {
                "val_loss_trained": round(val_loss, 5),
                "val_loss_average": round(avg_nats / self.val_scored_chars, 5),
            }
            self.averaged = avg_nats < val_nats
            if self.averaged:  # what is kept and reported is whichever scores better
                val_nats, val_loss = avg_nats, avg_nats / self.val_scored_chars
        self._finite &= math.isfinite(val_loss)
        self._check_finite()
        train_loss = float(torch.stack(self._losses).mean()) / self.chars_per_token if self._losses else None
        if train_loss is not None and self.ranks.world > 1:  # every rank's mean over as many tokens: their mean
            train_loss = self.ranks.sum(train_loss) / self.ranks.world
        record = {
            "step": p.step,
            "epoch": round(p.epoch + p.window / self.batcher.windows, 4),
            "train_loss": None if train_loss is None else round(train_loss, 5),
            "val_loss": round(val_loss, 5),
            "val_bpc": round(val_loss / math.log(2), 5),
            "val_nats_per_token": round(val_nats / (len(self.corpus.val) - 1), 5),
            "chars_per_token": round(self.chars_per_token, 4),
            "lr": self.lr(),
            "chars_per_sec": round(tokens * self.ranks.world * self.chars_per_token / max(train_time, 1e-9), 1),
            "elapsed_s": round(p.elapsed, 2),
            "progress": round(self.progress(), 5),
            "eval_s": round(self.ranks.sum(self.clock() - began) / self.ranks.world, 3),  # the same on every rank
            **extra,
        }
        self._losses, self._read_since = [], self.tokens_read
        self.metrics.append(record)
        self._compare_with_plan(record)
        if self.ranks.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        improved = val_loss < p.best_val
        p.best_val, p.bad_evals = (val_loss, 0) if improved else (p.best_val, p.bad_evals + 1)
        self._save(self.out / "last.pt")
        if improved:
            self._save(self.out / "best.pt")
        self.reporter.evaluated(self, record)
        self._since = self.clock()  # the next chars/s counts training only

    def _compare_with_plan(self, record: dict) -> None:
        """Once the run has trained a while: if it reads at over twice or under half the speed --size auto
        timed, say so, and keep it with what was chosen (info shows it)."""
        c, speed = self.config, record["chars_per_sec"]
        if not c.planned_speed or len(self.metrics) != 3 or 0.5 <= speed / c.planned_speed <= 2:
            return
        said = f"planned with ~{c.planned_speed / 1e3:.1f}k chars/s; it then trained at ~{speed / 1e3:.1f}k"
        self.reporter.note(
            f"--size auto {said}: this machine's speed changed (other work?), and so does what the run reads"
        )
        c.chosen = f"{c.chosen}\n({said})"

    @contextlib.contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """The model holds the moving average for the block's length, then its trained weights again."""
        params = list(self.model.parameters())
        trained = [w.detach().clone() for w in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.average)
            try:
                yield
            finally:
                torch._foreach_copy_(params, trained)

    def _result(self, **flags) -> Result:
        best = min(self.metrics, key=lambda r: r["val_loss"], default={"step": self.position.step})["step"]
        p = self.position
        return Result(p.best_val, self.out / "best.pt", self.out / "last.pt", p.step, best_step=best, **flags)

    # -- checkpoints -------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        state = [self.ranks.gather_rows(part) for part in self.state]  # every rank's streams, in global order
        if not self.ranks.main:
            return
        self._saving = True
        try:
            self._write(path, state)
        finally:
            self._saving = False

    def _write(self, path: Path, state: list[torch.Tensor]) -> None:
        weights, other, averaged = self._weights()
        checkpoint.save_model(
            ModelCheckpoint(
                self.model_config,
                self.config,
                self.corpus.tokenizer,
                weights,
                self.position,
                CorpusInfo(
                    self.corpus.name,
                    self.corpus.path,
                    len(self.corpus.train),
                    len(self.corpus.val),
                    self.corpus.train_chars,
                    self.corpus.val_chars,
                    self.corpus.fingerprint,
                ),
                self.metrics,
                optimizer=self.optimizer.state_dict(),
                averaged=averaged,
                other=other,
                lines=self.corpus.lines,
                lineage=self.lineage,
                batch_size=self.batcher.batch_size,
                state=state,
                rng=torch.get_rng_state(),
                cuda_rng=torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            ),
            path,
        )

    def _weights(self) -> tuple[dict, dict | None, bool]:
        """(weights, other, averaged) as a checkpoint holds them: the better-scoring set first."""
        trained = self.model.state_dict()
        if self.average is None:
            return trained, None, False
        names = [n for n, _ in self.model.named_parameters()]
        average = {**trained, **{n: a.detach().clone() for n, a in zip(names, self.average)}}
        return (average, trained, True) if self.averaged else (trained, average, False)

    def _restore(self, ckpt: ModelCheckpoint) -> None:
        saved = ckpt.corpus
        if (saved.train_tokens, saved.val_tokens) != (len(self.corpus.train), len(self.corpus.val)):
            raise CheckpointError(
                f"the checkpoint was trained on a text of {saved.train_tokens + saved.val_tokens} tokens "
                f"({saved.name}), not this one: resume with the same corpus and --val-frac"
            )
        if ckpt.batch_size != self.batcher.batch_size:
            raise CheckpointError(f"--batch-size cannot change on resume (the run used {ckpt.batch_size})")
        if ckpt.optimizer is None or ckpt.state is None or ckpt.rng is None:
            raise CheckpointError("the checkpoint holds no training state to resume from")
        self.model.load_state_dict(ckpt.trained)
        if self.average is not None:
            if ckpt.average is None:
                raise CheckpointError("--average cannot start on resume: the run kept no average (start a new run)")
            named = dict(self.model.named_parameters())
            self.average = [ckpt.average[n].to(self.device, torch.float32).clone() for n in named]
            self.averaged = ckpt.averaged
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.position = Position(**vars(ckpt.position))
        rows = self.batcher.rows  # this rank's streams of the saved global batch
        self.state = tuple(s[:, rows].contiguous().to(self.device) for s in ckpt.state)
        self.metrics = list(ckpt.metrics)
        self.lineage = list(ckpt.lineage)
        torch.set_rng_state(ckpt.rng)
        if ckpt.cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt.cuda_rng)


def _activation_penalty(raw: torch.Tensor, dropped: torch.Tensor, ar: float, tar: float) -> torch.Tensor:
    """AR and TAR (Merity et al. 2017): large outputs of the last layer, and outputs that jump from one step to the
    next, cost loss; the trained weights learn smaller, smoother activations. raw, dropped: (B, T, H)."""
    return ar * dropped.float().pow(2).mean() + tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
