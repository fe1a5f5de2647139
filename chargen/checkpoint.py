"""Checkpoints: one self-describing file, written atomically, loaded safely, verified, and read as typed data.

A checkpoint is a dict of plain data and tensors: format and version, model and training
configs, the tokenizer, weights, optimizer and trainer state, metrics, and a SHA-256 of
all of it. It is written to a temporary file and renamed over the old one, so a crash
mid-write leaves the previous checkpoint intact. Reading trusts nothing in the file: the
zip's entries are checked (stored, not compressed; sizes within the file; CRCs) before
torch sees it, so no entry can ask for more memory than the file holds; it is read with
`weights_only=True`, so a pickle that would run code is refused, never executed; every
tensor must own the bytes it claims (no zero-stride giants); the checksum catches bytes
changed inside tensors; and a model's configs and weight shapes must agree before a
single layer is built. This module alone knows the layout: everything else reads a
`ModelCheckpoint`.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import importlib.util
import math
import os
import pickle
import re
import sys
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from chargen.config import ModelConfig, TrainConfig, as_path
from chargen.errors import CheckpointError, SettingError
from chargen.files import atomic_write
from chargen.lines import LineSets
from chargen.tokenizer import Tokenizer, tokenizer_from_dict

FORMAT = "chargen-checkpoint"
VERSION = 1
KINDS = {"model": "a model checkpoint", "chat": "a saved conversation"}
MAX_ENTRIES = 100_000  # zip entries: one per tensor storage, plus a few


def checksum(data: Any) -> str:
    """SHA-256 of everything in `data`: keys, values, tensor dtypes, shapes and bytes."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)  # a copy only for a view; no tensor exceeds its storage
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                walk(k)
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, list | tuple):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(data)
    return h.hexdigest()


def save(data: dict, path: str | os.PathLike) -> None:
    """Write `data` (with format, version and checksum added) to `path` atomically."""
    data = {"format": FORMAT, "format_version": VERSION, **data}
    data.pop("checksum", None)
    data["checksum"] = checksum(data)
    with atomic_write(path) as f:
        torch.save(data, f)


def load(path: str | os.PathLike, kind: str = "model") -> dict:
    """Read and verify a checkpoint of `kind` (model or chat) on the CPU, whatever device wrote it."""
    path = as_path("path", path)
    if not path.is_file():
        hint = "; it is a folder: name a .pt file in it" if path.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}{hint} (train one with `chargen train CORPUS`)")
    damaged = f"{path} is truncated or corrupted" + (
        ": use another checkpoint (last.pt, best.pt) or train again" if kind == "model" else ""
    )
    _check_zip(path, damaged)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if _names_code(str(e)):  # torch refused a global that exists: no damage writes a real one
            raise CheckpointError(
                f"{path} is not a chargen checkpoint: it holds Python objects that would run code "
                "when loaded, so it was refused unopened"
            ) from None
        raise CheckpointError(damaged) from None
    except Exception:  # torch raises RuntimeError, EOFError, ValueError and more for damaged zips
        raise CheckpointError(damaged) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a chargen checkpoint (a PyTorch file of some other program)")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path} is damaged: format version {version!r} is not a positive whole number")
    if version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this chargen reads up to version {VERSION}: "
            "upgrade chargen (pip install -U chargen)"
        )
    _check_tensors(data, path)
    stored = data.pop("checksum", None)
    try:
        actual = checksum(data)
    except (ValueError, RecursionError):  # a value no chargen wrote (an int of thousands of digits, say)
        actual = None
    if stored != actual:
        raise CheckpointError(damaged.replace("truncated or corrupted", "corrupted (its checksum does not match)"))
    found = data.get("kind", "model")
    if found != kind:
        raise CheckpointError(f"{path} is {KINDS.get(found, repr(found))}, not {KINDS[kind]}")
    return data


def _names_code(refusal: str) -> bool:
    """Whether torch refused a pickle for naming a global that exists (`posix.system`): a file made to run code.
    Damaged bytes make other refusals (an unknown opcode), or name a global that is nowhere (`toRCh.HalfStorage`).
    Nothing is imported to tell: a module not yet imported counts as existing when it could be."""
    found = re.search(r"GLOBAL ([\w.]+)", refusal)
    if found is None:
        return False
    parts = found.group(1).strip(".").split(".")
    if len(parts) == 1:  # torch names a builtin by itself: GLOBAL print, GLOBAL eval
        return hasattr(builtins, parts[0])
    for i in range(len(parts) - 1, 0, -1):  # the longest module first: torch._utils then _rebuild_tensor_v2
        module, names = ".".join(parts[:i]), parts[i:]
        if module in sys.modules:
            return functools.reduce(lambda x, name: getattr(x, name, None), names, sys.modules[module]) is not None
    try:
        return importlib.util.find_spec(parts[0]) is not None
    except (ImportError, ValueError):
        return False


def _check_zip(path: Path, damaged: str) -> None:
    """Refuse a file whose zip entries could make torch allocate more than the file holds, or whose bytes changed."""
    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
            if len(entries) > MAX_ENTRIES:
                raise CheckpointError(f"{path} is not a chargen checkpoint ({len(entries):,} zip entries)")
            size = path.stat().st_size
            declared = 0
            for e in entries:
                if e.compress_type != zipfile.ZIP_STORED or e.compress_size != e.file_size:
                    raise CheckpointError(f"{path} is not a chargen checkpoint (it has compressed entries)")
                declared += e.file_size
            if declared > size:
                raise CheckpointError(damaged)
            if z.testzip() is not None:  # a CRC that does not match: bytes changed since it was written
                raise CheckpointError(damaged)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        raise CheckpointError(
            damaged if zip_start else f"{path} is not a chargen checkpoint (not a PyTorch zip file)"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror or e})") from None


MAX_DEPTH = 64  # nesting of dicts and lists; chargen's own files go 4 deep


def _check_tensors(data: Any, path: Path) -> None:
    """Every tensor lies within its own storage (no zero-stride view of a few bytes claims gigabytes), all
    tensors together hold no more bytes than the file (so hashing them costs about the file's size), and
    nothing is nested deeper than a checkpoint ever is."""
    budget = path.stat().st_size
    todo: list[tuple[Any, int]] = [(data, 0)]
    while todo:
        x, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{path} is not a chargen checkpoint (its contents are nested {depth} deep)")
        if isinstance(x, torch.Tensor):
            size = x.numel() * x.element_size()
            budget -= size
            if size > x.untyped_storage().nbytes() or budget < 0:
                raise CheckpointError(f"{path} is not a chargen checkpoint (a tensor claims more bytes than it holds)")
        elif isinstance(x, dict):
            todo.extend((v, depth + 1) for v in x.values())
        elif isinstance(x, list | tuple):
            todo.extend((v, depth + 1) for v in x)


BUNDLED = {"shakespeare": "tiny shakespeare"}  # models shipped in the package, by name


def bundled(name: str) -> Path | None:
    """The file of the model shipped in the package as `name`, or None."""
    from importlib.resources import files

    path = Path(str(files("chargen") / "bundled" / f"{name}.pt")) if name in BUNDLED else None
    return path if path is not None and path.is_file() else None


def locate(path: str | os.PathLike) -> Path:
    """`path` when it exists; else the bundled model of that name (`shakespeare`), if there is one."""
    path = as_path("path", path)
    return path if path.exists() else bundled(str(path)) or path


def newest(root: str | os.PathLike = "checkpoints", name: str = "best.pt") -> Path:
    """The most recently written `name` under `root`, for commands given no -c."""
    found = sorted(Path(root).rglob(name), key=lambda p: p.stat().st_mtime) if Path(root).is_dir() else []
    if not found:
        raise CheckpointError(
            f"no {name} under {root}/: train a model first (chargen train corpora/tinyshakespeare.txt) or pass -c PATH"
        )
    return found[-1]


# -- a model checkpoint, typed ---------------------------------------------------------------------


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # the next window of the epoch to train on
    elapsed: float = 0.0  # seconds of this run so far, across resumes
    best_val: float = math.inf  # lowest validation nats/char seen
    bad_evals: int = 0  # evaluations since best_val last improved


@dataclass
class CorpusInfo:
    """The text a model was trained on, as far as a resume or a report needs it."""

    name: str
    path: str | None  # absolute, so a resumed run can find it again
    train_tokens: int
    val_tokens: int
    train_chars: int
    val_chars: int
    fingerprint: str | None = None  # of the text's ids; None in checkpoints written before it was kept


@dataclass
class ModelCheckpoint:
    """Everything a model checkpoint holds: what it is, how it was trained, and how to continue exactly."""

    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    weights: dict[str, torch.Tensor]
    position: Position
    corpus: CorpusInfo
    metrics: list[dict] = field(default_factory=list)
    lines: LineSets | None = None  # a line-mode model's training and validation lines, as hashes
    # what an exact resume needs beyond the weights
    optimizer: dict | None = None
    batch_size: int | None = None  # the batch the run trained at (fewer streams than asked, for a short text)
    state: list[torch.Tensor] | None = None  # the carried state of its streams
    rng: torch.Tensor | None = None
    cuda_rng: torch.Tensor | None = None
    averaged: bool = False  # `weights` are the moving average of the trained weights (it scored better)
    other: dict[str, torch.Tensor] | None = None  # with --average: the trained weights or the average, not `weights`
    lineage: list[dict] = field(default_factory=list)  # the models it was fine-tuned from, nearest first (--from)
    path: Path | None = None  # where it was read from
    parameters: int = 0  # counted when it was read

    @property
    def trained(self) -> dict[str, torch.Tensor]:
        """The weights the optimizer has been stepping (what a resume goes on from)."""
        return self.other if self.averaged else self.weights

    @property
    def average(self) -> dict[str, torch.Tensor] | None:
        """The moving average of the trained weights, with --average; None without."""
        return self.weights if self.averaged else self.other

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def epochs(self) -> float:
        """Passes over the training text so far, with the fraction of the current one (from the last evaluation)."""
        last = self.metrics[-1].get("epoch") if self.metrics else None
        return float(last) if isinstance(last, int | float) else float(self.position.epoch)

    @property
    def best_val(self) -> float | None:
        """The lowest validation loss of the run, nats/char; None before its first evaluation."""
        return self.position.best_val if math.isfinite(self.position.best_val) else None

    def describe(self) -> str:
        """'2x384 LSTM, 1,903,554 parameters, trained on tinyshakespeare, best val 1.425 nats/char'"""
        best = f", best val {self.best_val:.3f} nats/char" if self.best_val is not None else ""
        return f"{self.model_config.summary()}, {self.parameters:,} parameters, trained on {self.corpus.name}{best}"

    def summary(self) -> dict:
        """What `chargen info --json` says of it: configs, vocabulary, parameters, steps, best validation loss."""
        best, t = self.best_val, self.train_config
        return {
            "checkpoint": str(self.path),  # a bundled model's name becomes its file
            "format_version": VERSION,
            "corpus": asdict(self.corpus),
            "tokenizer": {"kind": self.tokenizer.kind, "vocab_size": self.vocab_size},
            "parameters": self.parameters,
            "model": self.model_config.to_dict(),
            "train": t.to_dict(),
            "step": self.position.step,
            "epoch": self.epochs,
            "elapsed_s": round(self.position.elapsed, 1),
            "best_val_loss": None if best is None else round(best, 5),
            "best_val_bpc": None if best is None else round(best / math.log(2), 5),
            "weights": "average" if self.averaged else "trained",
            "lineage": self.lineage,
            "lines": None
            if self.lines is None
            else {"state": t.line_state, "train": len(self.lines.train), "val": len(self.lines.val)},
        }

    def to_dict(self) -> dict:
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "model": self.weights,
            "averaged": self.averaged,
            "other": self.other,
            "optimizer": self.optimizer,
            "trainer": {
                **asdict(self.position),
                "batch_size": self.batch_size,
                "state": self.state,
                "rng": self.rng,
                "cuda_rng": self.cuda_rng,
            },
            "corpus": asdict(self.corpus),
            "metrics": self.metrics,
            "lines": None if self.lines is None else self.lines.to_dict(),
            "lineage": self.lineage,
        }

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> ModelCheckpoint:
        """The typed contents of a verified checkpoint; CheckpointError for anything that does not fit."""
        where = path or "the checkpoint"
        try:
            model_config = ModelConfig.from_dict(_field(data, "model_config", dict))
            # a run from before the validation cap held out its whole val_frac
            train_config = TrainConfig.from_dict({"val_chars": None, **_field(data, "train_config", dict)})
            tokenizer = tokenizer_from_dict(_field(data, "tokenizer", dict))
            trainer = _field(data, "trainer", dict)
            position = Position(**{f.name: _number(trainer, f.name) for f in fields(Position)})
            corpus = _corpus(_field(data, "corpus", dict))
            weights = _field(data, "model", dict)
            _check_weights(weights, model_config, tokenizer.vocab_size)
            averaged, other = data.get("averaged", False), data.get("other")  # absent before --average
            if not isinstance(averaged, bool) or (averaged and other is None):
                raise ValueError("it says its weights are an average, and holds no others")
            if other is not None:
                _check_weights(_field(data, "other", dict), model_config, tokenizer.vocab_size)
            state = trainer.get("state")
            batch = trainer.get("batch_size")
            _check_state(state, batch, model_config)
            metrics = _field(data, "metrics", list)
            if not all(isinstance(m, dict) for m in metrics):
                raise ValueError("metrics holds something other than records")
            lines = data.get("lines")
            lines = None if lines is None else LineSets.from_dict(_field(data, "lines", dict))
            lineage = _lineage(data.get("lineage", []))  # absent before --from
        except SettingError as e:
            raise CheckpointError(f"{where} holds an invalid setting ({e}): it is damaged or not chargen's") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{where} does not hold a model this chargen can build ({e})") from None
        return cls(
            model_config,
            train_config,
            tokenizer,
            weights,
            position,
            corpus,
            metrics,
            lines,
            optimizer=data.get("optimizer"),
            batch_size=batch,
            state=state,
            rng=trainer.get("rng"),
            cuda_rng=trainer.get("cuda_rng"),
            averaged=averaged,
            other=other,
            lineage=lineage,
            path=path,
            parameters=sum(t.numel() for t in weights.values()),
        )


def save_model(ckpt: ModelCheckpoint, path: str | os.PathLike) -> None:
    save(ckpt.to_dict(), path)


def read(path: str | os.PathLike) -> ModelCheckpoint:
    """The model checkpoint at `path` (or the bundled model of that name), verified and typed."""
    found = locate(path)
    try:
        return ModelCheckpoint.from_dict(load(found, kind="model"), found)
    except CheckpointError as e:
        if str(path) in BUNDLED and found.exists() and found == as_path("path", path):  # a local name came first
            raise CheckpointError(
                f"{e}; note that ./{path} here hides the bundled model {path}: rename it, or run chargen elsewhere"
            ) from None
        raise


def _field(data: dict, key: str, kind: type):
    value = data[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def _number(data: dict, key: str):
    value = data[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))
    ):
        raise TypeError(f"trainer {key} is {value!r}, not a number")
    return value


def _lineage(records) -> list[dict]:
    """A fine-tuned model's ancestry: a list of records of plain values (names, hashes, counts)."""
    plain = str | int | float | type(None)
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, plain) for k, v in r.items()) for r in records
    ):
        raise TypeError("its lineage is not a list of records")
    return records


def _corpus(data: dict) -> CorpusInfo:
    info = CorpusInfo(**{f.name: data.get(f.name) for f in fields(CorpusInfo)})
    for key in ("train_tokens", "val_tokens", "train_chars", "val_chars"):
        _number(asdict(info), key)
    if not isinstance(info.name, str) or not (info.path is None or isinstance(info.path, str)):
        raise TypeError("the corpus name or path is not text")
    return info


def _check_weights(weights: dict, config: ModelConfig, vocab_size: int) -> None:
    """The stored weights must be exactly the tensors this config builds: names, shapes, floating dtypes."""
    from chargen.model import CharLM

    expected = CharLM.shapes(vocab_size, config)
    found = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    if found != expected or len(weights) != len(expected):
        wrong = sorted(set(expected.items()) ^ set(found.items()))[:1] or sorted(set(weights) - set(found))[:1]
        raise ValueError(f"its weights do not fit a {config.summary()} with a vocabulary of {vocab_size}: {wrong}")


def _check_state(state, batch, config: ModelConfig) -> None:
    if state is None:
        return
    want = 2 if config.cell == "lstm" else 1
    shape = (config.layers, batch, config.hidden)
    if not isinstance(state, list | tuple) or len(state) != want:
        raise ValueError("its carried state has the wrong number of parts")
    if not all(isinstance(s, torch.Tensor) and tuple(s.shape) == shape for s in state):
        raise ValueError(f"its carried state is not {shape}")
