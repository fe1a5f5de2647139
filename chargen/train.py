"""The training loop: truncated BPTT over carried state, AdamW, warm-up and cosine, evaluation, checkpoints.

A run stops when its budget (steps, epochs or wall-clock time, whichever ends first) is
spent, or when validation loss has not improved for `patience` evaluations. The learning
rate schedule is laid over the budget, so a timed run ends annealed. Everything a run needs
to continue exactly (weights, optimizer, step, data position, carried state, RNG) is in its
checkpoint. The trainer knows nothing of Click or of the terminal: it reports to a `Reporter`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from chargen import checkpoint
from chargen.config import ModelConfig, TrainConfig
from chargen.data import Corpus, StreamBatcher, fit_batch
from chargen.errors import ChargenError, CheckpointError, SettingError
from chargen.model import CharLM, State, detach


def resolve_device(name: str) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU; a named device must exist."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise SettingError(f"--device {name}: torch sees no such device here; use --device cpu or auto")
    return torch.device(name)


@torch.inference_mode()
def evaluate(model: CharLM, ids: np.ndarray, device: torch.device, amp: bool = False, window: int = 1024) -> float:
    """Total nats of every ids[i+1] given all of ids[:i+1], the state carried throughout.

    The text is cut into a few long streams run side by side (each at least 4,096 tokens,
    so cold starts cost next to nothing); what is left over continues the last stream.
    Every target is scored exactly once.
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

    state = run(ids[: streams * per].reshape(streams, per), ids[1 : streams * per + 1].reshape(streams, per), None)
    if n > streams * per:  # the tail continues the last stream
        last = tuple(s[:, -1:] for s in state) if state else None
        run(ids[streams * per : n][None], ids[streams * per + 1 : n + 1][None], last)
    return float(total)


def scored_chars(tokenizer, ids: np.ndarray, chars: int) -> int:
    """Characters that `evaluate` scores: all but those of the first token, which is only context."""
    return chars - len(tokenizer.decode([int(ids[0])]))


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # the next window of the epoch to train on
    elapsed: float = 0.0  # seconds of this run so far, across resumes
    best_val: float = math.inf  # lowest validation nats/char seen
    bad_evals: int = 0  # evaluations since best_val last improved


class Reporter:
    """What the trainer tells the outside world; the CLI draws a progress bar from it."""

    def start(self, trainer: Trainer) -> None: ...

    def step(self, trainer: Trainer) -> None: ...

    def evaluated(self, trainer: Trainer, record: dict) -> None: ...

    def note(self, text: str) -> None: ...

    def end(self, trainer: Trainer) -> None: ...


@dataclass
class Result:
    best_val: float  # nats/char
    best_path: Path
    last_path: Path
    step: int
    interrupted: bool = False
    stopped_early: bool = False


class Trainer:
    def __init__(
        self,
        corpus: Corpus,
        model_config: ModelConfig,
        config: TrainConfig,
        out: str | Path,
        reporter: Reporter | None = None,
        resume: dict | None = None,
    ) -> None:
        self.corpus, self.model_config, self.config = corpus, model_config, config
        self.reporter = reporter or Reporter()
        self.out = Path(out)
        self.device = resolve_device(config.device)
        self.amp = config.amp and self.device.type == "cuda"
        torch.manual_seed(config.seed)

        batch = fit_batch(len(corpus.train), config.batch_size, config.seq_len)
        if batch < config.batch_size:
            self.reporter.note(f"the training text is short: using --batch-size {batch} instead of {config.batch_size}")
        if len(corpus.val) < 2:
            raise ChargenError("the validation text is too short to score: raise --val-frac or use a longer text")
        self.batcher = StreamBatcher(corpus.train, batch, config.seq_len, self.device, config.seed)
        self.chars_per_token = corpus.train_chars / len(corpus.train)
        self.val_scored_chars = scored_chars(corpus.tokenizer, corpus.val, corpus.val_chars)

        self.model = CharLM(corpus.tokenizer.vocab_size, model_config).to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=config.lr,
            betas=(0.9, 0.99),
            fused=self.device.type in ("cuda", "cpu"),  # one kernel for all parameters
        )
        self.position = Position()
        self.state = self.model.initial_state(batch, self.device)
        self.metrics: list[dict] = []
        self._losses: list[torch.Tensor] = []  # since the last evaluation, still on the device
        self._tokens, self._since = 0, time.perf_counter()  # likewise: tokens trained, and since when
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

    def run(self, stop_at: int | None = None) -> Result:
        """Train until the budget is spent (or step `stop_at`); Ctrl-C saves last.pt and returns."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.reporter.start(self)
        p, result = self.position, None
        clock, self._since = time.perf_counter() - p.elapsed, time.perf_counter()
        try:
            while self.progress() < 1 and (stop_at is None or p.step < stop_at):
                self._train_step()
                p.elapsed = time.perf_counter() - clock
                self.reporter.step(self)
                if p.step % self.config.eval_every == 0 or self.progress() >= 1:
                    self._evaluate_and_save()
                    p.elapsed = time.perf_counter() - clock
                    if self.config.patience and p.bad_evals >= self.config.patience:
                        result = self._result(stopped_early=True)
                        break
        except KeyboardInterrupt:
            p.elapsed = time.perf_counter() - clock
            self._save(self.out / "last.pt")
            result = self._result(interrupted=True)
        else:
            if not self.metrics or self.metrics[-1]["step"] != p.step:
                self._evaluate_and_save()
            result = result or self._result()
        self.reporter.end(self)
        return result

    def _train_step(self) -> None:
        c, p = self.config, self.position
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        x, y = self.batcher.window(p.epoch, p.window)  # (B, T) each
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, state = self.model(x, self.state)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip, foreach=True)
        self.optimizer.step()
        # Truncated BPTT: the next window starts from this state's values, but its gradient stops here.
        self.state = detach(state)
        self._losses.append(loss.detach())  # read at evaluation time: no host sync per step
        self._tokens += x.numel()
        p.step += 1
        p.window += 1
        if p.window == self.batcher.windows:  # a new epoch restarts every stream, at a new offset
            p.epoch, p.window = p.epoch + 1, 0
            self.state = self.model.initial_state(self.batcher.batch_size, self.device)

    def _evaluate_and_save(self) -> None:
        p = self.position
        if self.device.type == "cuda":  # steps run ahead of the host: wait for them, so chars/s is true
            torch.cuda.synchronize(self.device)
        train_time = time.perf_counter() - self._since
        val_nats = evaluate(self.model, self.corpus.val, self.device, self.amp)
        val_loss = val_nats / self.val_scored_chars
        train_loss = float(torch.stack(self._losses).mean()) / self.chars_per_token if self._losses else None
        record = {
            "step": p.step,
            "epoch": round(p.epoch + p.window / self.batcher.windows, 4),
            "train_loss": None if train_loss is None else round(train_loss, 5),
            "val_loss": round(val_loss, 5),
            "val_bpc": round(val_loss / math.log(2), 5),
            "val_nats_per_token": round(val_nats / (len(self.corpus.val) - 1), 5),
            "chars_per_token": round(self.chars_per_token, 4),
            "lr": self.lr(),
            "chars_per_sec": round(self._tokens * self.chars_per_token / max(train_time, 1e-9), 1),
            "elapsed_s": round(p.elapsed, 2),
        }
        self._losses, self._tokens = [], 0
        self.metrics.append(record)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        improved = val_loss < p.best_val
        p.best_val, p.bad_evals = (val_loss, 0) if improved else (p.best_val, p.bad_evals + 1)
        self._save(self.out / "last.pt")
        if improved:
            self._save(self.out / "best.pt")
        self.reporter.evaluated(self, record)
        self._since = time.perf_counter()  # the next chars/s counts training only

    def _result(self, **flags) -> Result:
        return Result(self.position.best_val, self.out / "best.pt", self.out / "last.pt", self.position.step, **flags)

    # -- checkpoints -------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        p = self.position
        checkpoint.save(
            {
                "model_config": self.model_config.to_dict(),
                "train_config": self.config.to_dict(),
                "tokenizer": self.corpus.tokenizer.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "trainer": {
                    **p.__dict__,
                    "batch_size": self.batcher.batch_size,
                    "state": list(self.state),
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
                },
                "corpus": {
                    "name": self.corpus.name,
                    "path": self.corpus.path,
                    "train_tokens": len(self.corpus.train),
                    "val_tokens": len(self.corpus.val),
                    "train_chars": self.corpus.train_chars,
                    "val_chars": self.corpus.val_chars,
                },
                "metrics": self.metrics,
            },
            path,
        )

    def _restore(self, ckpt: dict) -> None:
        saved = ckpt["corpus"]
        if (saved["train_tokens"], saved["val_tokens"]) != (len(self.corpus.train), len(self.corpus.val)):
            raise CheckpointError(
                f"the checkpoint was trained on a text of {saved['train_tokens'] + saved['val_tokens']} tokens "
                f"({saved['name']}), not this one: resume with the same corpus and --val-frac"
            )
        t = ckpt["trainer"]
        if t["batch_size"] != self.batcher.batch_size:
            raise CheckpointError(f"--batch-size cannot change on resume (the run used {t['batch_size']})")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.position = Position(**{k: t[k] for k in Position.__dataclass_fields__})
        self.state = tuple(s.to(self.device) for s in t["state"])
        self.metrics = list(ckpt["metrics"])
        torch.set_rng_state(t["rng"])
        if t["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(t["cuda_rng"])
