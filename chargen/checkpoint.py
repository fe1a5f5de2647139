"""Checkpoints: one self-describing file, written atomically, loaded safely and verified.

A checkpoint is a dict of plain data and tensors: format and version, model and training
configs, the tokenizer, weights, optimizer and trainer state, metrics, and a SHA-256 of
all of it. It is written to a temporary file and renamed over the old one, so a crash
mid-write leaves the previous checkpoint intact; it is read with `weights_only=True`, so
a pickle that would run code is refused, never executed; and the checksum catches bytes
changed inside tensors, which torch's loader does not notice.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from chargen.errors import CheckpointError

FORMAT = "chargen-checkpoint"
VERSION = 1


def checksum(data: Any) -> str:
    """SHA-256 of everything in `data`: keys, values, tensor dtypes, shapes and bytes."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
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
    path = Path(path)
    data = {"format": FORMAT, "format_version": VERSION, **data}
    data.pop("checksum", None)
    data["checksum"] = checksum(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


KINDS = {"model": "a model checkpoint", "chat": "a saved conversation"}


def load(path: str | os.PathLike, kind: str = "model") -> dict:
    """Read and verify a checkpoint of `kind` (model or chat) on the CPU, whatever device wrote it."""
    path = Path(path)
    if not path.is_file():
        hint = "; it is a folder: name a .pt file in it" if path.is_dir() else ""
        raise CheckpointError(f"no checkpoint at {path}{hint} (train one with `chargen train CORPUS`)")
    damaged = f"{path} is truncated or corrupted: use another checkpoint (last.pt, best.pt) or train again"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        raise CheckpointError(damaged if zip_start else f"{path} is not a chargen checkpoint (not a PyTorch zip file)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
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
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this chargen reads up to version {VERSION}: "
            "upgrade chargen (pip install -U chargen)"
        )
    stored = data.pop("checksum", None)
    if stored != checksum(data):
        raise CheckpointError(damaged.replace("truncated or corrupted", "corrupted (its checksum does not match)"))
    found = data.get("kind", "model")
    if found != kind:
        raise CheckpointError(f"{path} is {KINDS.get(found, found)}, not {KINDS[kind]}")
    return data


def newest(root: str | os.PathLike = "checkpoints", name: str = "best.pt") -> Path:
    """The most recently written `name` under `root`, for commands given no -c."""
    found = sorted(Path(root).rglob(name), key=lambda p: p.stat().st_mtime) if Path(root).is_dir() else []
    if not found:
        raise CheckpointError(
            f"no {name} under {root}/: train a model first (chargen train corpora/tinyshakespeare.txt) or pass -c PATH"
        )
    return found[-1]
