"""Settings for the model, training and sampling: the one place every default lives.

Each field's default is read by the CLI for its flag, so a flag, its `--help` text and
the value stored in a checkpoint never disagree. Validation raises `SettingError` with the
setting's name first ("temp must be 0 or more"); the CLI puts the flag in its place.
Nothing here imports torch, so `chargen --help` stays fast.
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from chargen.errors import SettingError

CELLS = ("lstm", "gru", "rnn")
DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_DEVICE = "auto"  # where sample, chat, eval and the Python API run: the GPU when there is one
EVAL_EVERY = 250  # steps between evaluations when --eval-every is not given; and at least EVALS over the
EVALS = 20  # budget, while evaluating takes under 1/EVALS of the time (the trainer's _mark_passed)
TOKENIZERS = ("char", "sp")
SP_MODELS = ("unigram", "bpe")
LINE_STATES = ("carry", "reset")
SIZES = ("auto", "fixed")
DEFAULT_TIME = "5m"  # the budget of a run given no --steps, --epochs or --time
CHAT_STOP = ("\n\n",)  # a chat answer ends at a blank line unless told otherwise
MAX_LAYERS, MAX_WIDTH = 64, 1 << 16  # far beyond any model that trains in a day, and a bound on what a file may ask
MAX_STOP = 256  # characters of one stop string: matching costs each stream up to this much every step
MAX_TEMP = 100.0  # far past uniform already; a float32 logit divided by more overflows to nothing
MAX_SEED = 2**32 - 1
INSPECT_CHARS = 5000  # characters an inspect page reads by default: a page that opens in a second
INSPECT_UNITS = 48  # units per layer whose cell state and gates an inspect page holds (h is there for all)
INSPECT_MAX_CHARS = 20_000  # the most a served inspect page reads: a page's size grows with its text
MIN_SP_VOCAB = 256 + 8  # the byte pieces, the unknown, begin and end symbols, newline, and a few characters


def _require(ok: bool, setting: str, rest: str) -> None:
    if not ok:
        raise SettingError(f"{setting} {rest}", setting)


class _Plain:
    """Type checks on construction, and a round trip through the plain dicts that checkpoints hold."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), _hints(type(self))[f.name]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of(cls, **values):
        """An instance from settings by name; SettingError names one that is not a setting here."""
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for name in values:
            if name not in known:
                raise SettingError(f"{name} is not a setting; the settings are {', '.join(known)}", name)
        return cls(**values)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _typed(name: str, value, hint):
    """`value` as the type `hint` names (an int where a float goes, a list where a tuple goes), or SettingError."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(as_text(name, v) for v in value)
        raise SettingError(f"{name} takes a list of strings, not {value!r}", name)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an int beyond any float
            value = math.inf
        if not math.isfinite(value):
            raise SettingError(f"{name} must be a finite number, not {value!r}", name)
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return as_text(name, value)
    raise SettingError(f"{name} takes {'an' if hint is int else 'a'} {hint.__name__}, not {value!r}", name)


def as_path(name: str, value) -> Path:
    """`value` as a path, or SettingError naming the argument."""
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise SettingError(f"{name} must be a path, not {value!r}", name)


def as_text(name: str, value) -> str:
    """`value` if it is text that UTF-8 can hold (not the undecodable bytes of a bad argument), else SettingError."""
    if not isinstance(value, str):
        raise SettingError(f"{name} must be text, not {value!r}", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SettingError(f"{name} is not valid UTF-8 text: give it in UTF-8", name) from None
    return value


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, f"must be one of {', '.join(choices)}, not {value!r}")


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
    locked: bool = False
    """Dropout masks drawn once per stream and window, the same at every step (variational) (--locked-dropout)."""
    weight_drop: float = 0.0
    """DropConnect on each layer's hidden-to-hidden weights, a mask per training batch (--weight-drop)."""
    embed_drop: float = 0.0
    """Drop whole characters' embedding rows, a mask per training batch (--embed-drop)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("cell", self.cell, CELLS)
        for name in ("weight_drop", "embed_drop"):
            value = getattr(self, name)
            _require(0 <= value < 1, name, f"must be in [0, 1), not {value}")
        _require(1 <= self.layers <= MAX_LAYERS, "layers", f"must be from 1 to {MAX_LAYERS}, not {self.layers}")
        _require(1 <= self.hidden <= MAX_WIDTH, "hidden", f"must be from 1 to {MAX_WIDTH}, not {self.hidden}")
        _require(1 <= self.embed <= MAX_WIDTH, "embed", f"must be from 1 to {MAX_WIDTH}, not {self.embed}")
        _require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), not {self.dropout}")

    def summary(self) -> str:
        """'2x384 LSTM': how the model is named in every message."""
        return f"{self.layers}x{self.hidden} {self.cell.upper()}"


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
    eval_every: int | None = None
    """Steps between evaluations on the validation text (--eval-every); by default every 250 steps and each
    twentieth of the budget, while evaluating takes under a twentieth of the run's time."""
    patience: int | None = None
    """Stop after this many evaluations without a better validation loss (--patience)."""
    average: float = 0.0
    """Keep a moving average of the weights, this much of it kept each step (0.999); evaluated beside the
    trained weights, and best.pt holds whichever scores better. 0 is off (--average)."""
    ar: float = 0.0
    """Activation regularisation: this times the mean square of the last layer's dropped output, added to the
    loss (--ar; AWD-LSTM's alpha)."""
    tar: float = 0.0
    """Temporal activation regularisation: this times the mean square of the last layer's step-to-step change,
    before dropout, added to the loss (--tar; AWD-LSTM's beta)."""
    val_frac: float = 0.1
    """The last fraction of the text held out for validation (--val-frac)."""
    val_chars: int | None = 1_000_000
    """At most this many characters held out, so a corpus of gigabytes is scored in seconds (--val-chars)."""
    seed: int = 1337
    """Seed for weights, dropout and data offsets (--seed)."""
    device: str = DEFAULT_DEVICE
    """auto, cpu, cuda or mps (--device)."""
    amp: bool = True
    """bf16 autocast on a GPU (--amp/--no-amp); always off on a CPU."""
    tokenizer: str = "char"
    """char or sp (SentencePiece) (--tokenizer)."""
    vocab_size: int = 2000
    """SentencePiece vocabulary size (--vocab-size)."""
    sp_model: str = "unigram"
    """SentencePiece model type, unigram or bpe (--sp-model)."""
    lines: bool = False
    """Each line is one example (names, words, titles); a random val_frac of the lines is held out (--lines)."""
    line_state: str = "carry"
    """Line mode: carry the state from example to example, or read each from a fresh state (--line-state)."""
    size: str = "auto"
    """auto: a new run chooses the size, batch, dropout and lr not given, from the budget, the corpus and this
    device's speed; fixed: every default as it is (--size)."""
    chosen: str | None = None
    """What --size auto chose and why: written by the run, shown by info."""
    planned_speed: float | None = None
    """The chars/s --size auto timed and planned with: written by the run, which says so if it trains at over
    twice or under half of it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 <= self.average < 1, "average", f"must be in [0, 1), not {self.average}")
        for name in ("ar", "tar"):
            _require(getattr(self, name) >= 0, name, f"must be 0 or more, not {getattr(self, name)}")
        _require(
            1 <= self.batch_size <= MAX_WIDTH, "batch_size", f"must be from 1 to {MAX_WIDTH}, not {self.batch_size}"
        )
        _require(self.seq_len >= 2, "seq_len", f"must be at least 2, not {self.seq_len}")
        _require(self.lr > 0, "lr", f"must be positive, not {self.lr}")
        _require(0 <= self.min_lr_frac <= 1, "min_lr_frac", f"must be in [0, 1], not {self.min_lr_frac}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more, not {self.weight_decay}")
        _require(self.grad_clip >= 0, "grad_clip", f"must be 0 or more, not {self.grad_clip}")
        _require(self.warmup >= 0, "warmup", f"must be 0 or more, not {self.warmup}")
        _require(self.steps is None or self.steps >= 1, "steps", f"must be at least 1, not {self.steps}")
        _require(self.epochs is None or self.epochs > 0, "epochs", f"must be positive, not {self.epochs}")
        _require(self.time is None or self.time > 0, "time", f"must be positive, not {self.time}")
        _require(
            self.eval_every is None or self.eval_every >= 1, "eval_every", f"must be at least 1, not {self.eval_every}"
        )
        _require(self.patience is None or self.patience >= 1, "patience", f"must be at least 1, not {self.patience}")
        _require(0 < self.val_frac < 1, "val_frac", f"must be between 0 and 1, not {self.val_frac}")
        _require(
            self.val_chars is None or self.val_chars >= 2, "val_chars", f"must be at least 2, not {self.val_chars}"
        )
        _require(0 <= self.seed <= MAX_SEED, "seed", f"must be from 0 to {MAX_SEED}, not {self.seed}")
        _one_of("device", self.device, DEVICES)
        _one_of("tokenizer", self.tokenizer, TOKENIZERS)
        _require(
            MIN_SP_VOCAB <= self.vocab_size <= MAX_WIDTH,
            "vocab_size",
            f"must be from {MIN_SP_VOCAB} (256 go to bytes) to {MAX_WIDTH}, not {self.vocab_size}",
        )
        _one_of("sp_model", self.sp_model, SP_MODELS)
        _one_of("line_state", self.line_state, LINE_STATES)
        _one_of("size", self.size, SIZES)
        _require(
            not (self.lines and self.tokenizer != "char"),
            "lines",
            "works with characters: drop --tokenizer sp (a list's lines are short)",
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
    min_p: float | None = None
    """Sample only tokens at least this times as likely as the most likely one (--min-p)."""
    repeat_penalty: float = 1.0
    """Make tokens seen in the last repeat_window less likely by this factor; 1 is off (--repeat-penalty)."""
    repeat_window: int = 64
    """Tokens the penalties look back over (--repeat-window)."""
    presence_penalty: float = 0.0
    """Lower the logit of every token seen in the window by this (--presence-penalty)."""
    frequency_penalty: float = 0.0
    """Lower each token's logit by this times its count in the window (--frequency-penalty)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # one stop string, not its characters
            self.stop = (self.stop,)
        super().__post_init__()
        _require(self.temp >= 0, "temp", f"must be 0 or more, not {self.temp}")
        _require(self.top_k is None or self.top_k >= 1, "top_k", f"must be at least 1, not {self.top_k}")
        _require(self.top_p is None or 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], not {self.top_p}")
        _require(self.length >= 0, "length", f"must be 0 or more, not {self.length}")
        _require(
            self.seed is None or 0 <= self.seed <= MAX_SEED, "seed", f"must be from 0 to {MAX_SEED}, not {self.seed}"
        )
        _require(self.min_p is None or 0 < self.min_p <= 1, "min_p", f"must be in (0, 1], not {self.min_p}")
        _require(self.repeat_penalty > 0, "repeat_penalty", f"must be positive, not {self.repeat_penalty}")
        _require(
            1 <= self.repeat_window <= MAX_WIDTH,
            "repeat_window",
            f"must be from 1 to {MAX_WIDTH}, not {self.repeat_window}",
        )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _require(-2 <= value <= 2, name, f"must be from -2 to 2, as in OpenAI's API, not {value}")
        self.stop = tuple(s for s in self.stop if s)
        longest = max(map(len, self.stop), default=0)
        _require(longest <= MAX_STOP, "stop", f"strings must be at most {MAX_STOP} characters, not {longest}")
        _require(self.temp <= MAX_TEMP, "temp", f"must be at most {MAX_TEMP:g}, not {self.temp}")

    @property
    def drawing(self) -> dict:
        """The keyword arguments of the draw (`chargen.writer.sample`) these settings give."""
        return {"temperature": self.temp, "top_k": self.top_k, "top_p": self.top_p, "min_p": self.min_p}

    @property
    def penalties(self) -> dict | None:
        """The keyword arguments of `chargen.writer.penalize` these settings give; None when every penalty is off."""
        if self.repeat_penalty == 1 and not self.presence_penalty and not self.frequency_penalty:
            return None
        return {"repeat": self.repeat_penalty, "presence": self.presence_penalty, "frequency": self.frequency_penalty}


@dataclass
class LearnConfig(_Plain):
    """Dynamic evaluation: the model takes a small step on each window of text it has just read and scored."""

    learn_rate: float = 1e-3
    """Size of each step, in units of each weight's RMS-normalised gradient (--learn-rate)."""
    learn_window: int = 64
    """Tokens read (and scored) before each step: the truncated-BPTT window (--learn-window)."""
    learn_decay: float = 0.001
    """Each step pulls the weights this fraction of the way back to the trained ones (--learn-decay)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 < self.learn_rate <= 1, "learn_rate", f"must be in (0, 1], not {self.learn_rate}")
        _require(
            1 <= self.learn_window <= MAX_WIDTH,
            "learn_window",
            f"must be from 1 to {MAX_WIDTH}, not {self.learn_window}",
        )
        _require(0 <= self.learn_decay <= 1, "learn_decay", f"must be in [0, 1], not {self.learn_decay}")

    def describe(self) -> str:
        return f"learn rate {self.learn_rate:g}, window {self.learn_window}, decay {self.learn_decay:g}"


def setting_types(cls) -> dict[str, type]:
    """{name: the plain type a person types} of a settings dataclass: int, float, str or bool."""
    out = {}
    for name, hint in _hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = str if typing.get_origin(hint) is tuple else args[0] if args else hint
    return out


def parse_setting(cls, name: str, words: list[str]):
    """The value of setting `name` of `cls` from words as typed ('none' or 'off' clears an optional one;
    a tuple takes every word, with backslash escapes); raises SettingError naming it."""
    hint = _hints(cls)[name]
    if typing.get_origin(hint) is tuple:
        return tuple(unescape(w) for w in words)
    optional = type(None) in typing.get_args(hint)
    if optional and words[0].lower() in ("none", "off"):
        return None
    kind = setting_types(cls)[name]
    try:
        return kind(words[0])
    except ValueError:
        raise SettingError(
            f"{name} takes {'an' if kind is int else 'a'} {kind.__name__}, not {words[0]!r}", name
        ) from None


def unescape(text: str) -> str:
    r"""'\n', '\t' and '\\' as typed, to the characters they name."""
    if "\\" not in text:
        return text
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:  # a lone or unknown escape: keep the text as typed
        return text


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
    if not text or pos != len(text) or not 0 < total < math.inf:
        raise SettingError(f"time takes a duration such as 90s, 10m, 2h or 1h30m, not {text!r}", "time")
    return total


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class ServeConfig(_Plain):
    host: str = "127.0.0.1"
    """The address to listen on; the default is this machine only (--host)."""
    port: int = 8000
    """The port to listen on (--port)."""
    completion_length: int = 16
    """Characters a completion writes when a request gives no max_tokens (OpenAI's default)."""
    api_key: str | None = None
    """Needed on every route but /health when set (--api-key)."""
    max_sessions: int = 1000
    """Sessions kept; at the cap the least recently used idle one makes room (--max-sessions)."""
    session_ttl: float = 1800.0
    """Seconds a session may sit idle before it expires (--session-ttl)."""
    model_name: str = "chargen"
    """The model's name in /v1/models and in each response."""
    user_prefix: str = ""
    """Put before each user message of a chat request that sends none, e.g. "ROMEO:\\n" (--user-prefix)."""
    bot_prefix: str = ""
    """Put before each answer of a chat request that sends none, e.g. "JULIET:\\n" (--bot-prefix)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.max_sessions >= 1, "max_sessions", f"must be at least 1, not {self.max_sessions}")
        _require(self.session_ttl > 0, "session_ttl", f"must be positive, not {self.session_ttl}")
