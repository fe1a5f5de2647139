"""Settings for the model, training and sampling: the one place every default lives.

Each field's default is read by the CLI for its flag, so a flag, its `--help` text and
the value stored in a checkpoint never disagree. Validation names the flag a person typed.
Nothing here imports torch, so `chargen --help` stays fast.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from chargen.errors import SettingError

CELLS = ("lstm", "gru", "rnn")
DEVICES = ("auto", "cpu", "cuda", "mps")
TOKENIZERS = ("char", "sp")
SP_MODELS = ("unigram", "bpe")
DEFAULT_TIME = "5m"  # the budget of a run given no --steps, --epochs or --time


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SettingError(message)


class _Plain:
    """Round trip through the plain dicts that checkpoints hold."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ModelConfig(_Plain):
    cell: str = "lstm"
    """Recurrent cell: lstm, gru or rnn (--cell)."""
    layers: int = 2
    """Stacked recurrent layers (--layers)."""
    hidden: int = 384
    """Units per recurrent layer (--hidden)."""
    embed: int = 64
    """Width of the token embedding (--embed)."""
    dropout: float = 0.1
    """Dropout on the embedding, between layers and before the head (--dropout)."""

    def __post_init__(self) -> None:
        _require(self.cell in CELLS, f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        _require(self.layers >= 1, f"--layers must be at least 1, not {self.layers}")
        _require(self.hidden >= 1, f"--hidden must be at least 1, not {self.hidden}")
        _require(self.embed >= 1, f"--embed must be at least 1, not {self.embed}")
        _require(0 <= self.dropout < 1, f"--dropout must be in [0, 1), not {self.dropout}")


@dataclass
class TrainConfig(_Plain):
    batch_size: int = 16
    """Contiguous streams read side by side (--batch-size)."""
    seq_len: int = 128
    """Characters per truncated-BPTT window (--seq-len)."""
    lr: float = 4e-3
    """Peak learning rate of AdamW (--lr)."""
    min_lr_frac: float = 0.05
    """The cosine schedule ends at lr times this."""
    weight_decay: float = 0.01
    """AdamW weight decay on weight matrices (--weight-decay)."""
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this; 0 turns clipping off (--grad-clip)."""
    warmup: int = 50
    """Steps of linear warm-up before the cosine decay (--warmup)."""
    steps: int | None = None
    """Stop after this many optimizer steps (--steps)."""
    epochs: float | None = None
    """Stop after this many passes over the training text (--epochs)."""
    time: float | None = None
    """Stop after this many seconds of wall-clock time (--time)."""
    eval_every: int = 250
    """Steps between evaluations on the validation text (--eval-every)."""
    patience: int | None = None
    """Stop after this many evaluations without a better validation loss (--patience)."""
    val_frac: float = 0.1
    """The last fraction of the text held out for validation (--val-frac)."""
    seed: int = 1337
    """Seed for weights, dropout and data offsets (--seed)."""
    device: str = "auto"
    """auto, cpu, cuda or mps (--device)."""
    amp: bool = True
    """bf16 autocast on a GPU (--amp/--no-amp); always off on a CPU."""
    tokenizer: str = "char"
    """char or sp (SentencePiece) (--tokenizer)."""
    vocab_size: int = 2000
    """SentencePiece vocabulary size (--vocab-size)."""
    sp_model: str = "unigram"
    """SentencePiece model type, unigram or bpe (--sp-model)."""

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}")
        _require(self.seq_len >= 2, f"--seq-len must be at least 2, not {self.seq_len}")
        _require(self.lr > 0, f"--lr must be positive, not {self.lr}")
        _require(0 <= self.min_lr_frac <= 1, f"min_lr_frac must be in [0, 1], not {self.min_lr_frac}")
        _require(self.weight_decay >= 0, f"--weight-decay must be 0 or more, not {self.weight_decay}")
        _require(self.grad_clip >= 0, f"--grad-clip must be 0 or more, not {self.grad_clip}")
        _require(self.warmup >= 0, f"--warmup must be 0 or more, not {self.warmup}")
        _require(self.steps is None or self.steps >= 1, f"--steps must be at least 1, not {self.steps}")
        _require(self.epochs is None or self.epochs > 0, f"--epochs must be positive, not {self.epochs}")
        _require(self.time is None or self.time > 0, f"--time must be positive, not {self.time}")
        _require(self.eval_every >= 1, f"--eval-every must be at least 1, not {self.eval_every}")
        _require(
            self.patience is None or self.patience >= 1,
            f"--patience must be at least 1, not {self.patience}",
        )
        _require(0 < self.val_frac < 1, f"--val-frac must be between 0 and 1, not {self.val_frac}")
        _require(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        _require(
            self.tokenizer in TOKENIZERS,
            f"--tokenizer must be one of {', '.join(TOKENIZERS)}, not {self.tokenizer!r}",
        )
        _require(self.vocab_size >= 300, f"--vocab-size must be at least 300 (256 go to bytes), not {self.vocab_size}")
        _require(
            self.sp_model in SP_MODELS,
            f"--sp-model must be one of {', '.join(SP_MODELS)}, not {self.sp_model!r}",
        )
        if self.steps is None and self.epochs is None and self.time is None:
            self.time = parse_duration(DEFAULT_TIME)


@dataclass
class SampleConfig(_Plain):
    temp: float = 0.8
    """Softmax temperature; 0 picks the most likely character (-t/--temp)."""
    top_k: int | None = None
    """Sample only from the k most likely tokens (-k/--top-k)."""
    top_p: float | None = None
    """Sample only from the smallest set whose probability reaches p (-p/--top-p)."""
    length: int = 500
    """Characters to generate after the prime (-l/--length)."""
    seed: int | None = None
    """Seed of the random draw: the same seed gives the same text (--seed)."""
    stop: tuple[str, ...] = ()
    """Stop a sample when it writes one of these strings (--stop)."""

    def __post_init__(self) -> None:
        _require(self.temp >= 0, f"--temp must be 0 or more, not {self.temp}")
        _require(self.top_k is None or self.top_k >= 1, f"--top-k must be at least 1, not {self.top_k}")
        _require(
            self.top_p is None or 0 < self.top_p <= 1,
            f"--top-p must be in (0, 1], not {self.top_p}",
        )
        _require(self.length >= 0, f"--length must be 0 or more, not {self.length}")
        self.stop = tuple(s for s in self.stop if s)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' or a bare number of seconds, to seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if not m or m.end() == pos:
            break
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if not text or pos != len(text) or total <= 0:
        raise SettingError(f"--time takes a duration such as 90s, 10m, 2h or 1h30m, not {text!r}")
    return total


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
