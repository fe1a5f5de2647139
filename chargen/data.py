"""Corpora: reading text, encoding it once to a memory-mapped id cache, the split, and TBPTT batches.

Text is read as UTF-8 in chunks (a byte-order mark is dropped, newlines are normalised to
\\n), so memory stays far below the size of the corpus as a Python string. A folder means
its text files in sorted order. The ids of the training part and of the validation part
(the last `val_frac` of the characters, contiguous) are written once to a cache keyed by
the files and the tokenizer, and memory-mapped on every later run.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chargen.errors import CorpusError
from chargen.tokenizer import Tokenizer

CHUNK_CHARS = 1 << 20
MIN_CHARS = 100  # below this there is nothing to learn, whatever the settings


def corpus_files(path: str | os.PathLike) -> list[Path]:
    """The text files that `path` names: itself, or a folder's non-hidden files in sorted order."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path} does not exist: give the path of a text file or a folder of them")
    if path.is_file():
        if _looks_binary(path):
            raise CorpusError(f"{path} looks like a binary file (it holds NUL bytes): chargen trains on UTF-8 text")
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    texts = [p for p in files if not _looks_binary(p) and p.stat().st_size > 0]
    if not texts:
        raise CorpusError(f"{path} is a folder with no text files in it: put UTF-8 .txt files there")
    return texts


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def read_chunks(files: list[Path], chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of `files`, in chunks of about `chunk_chars` characters; each file starts on a new line."""
    ends_line = True
    for path in files:
        try:
            with open(path, encoding="utf-8-sig", newline=None) as f:
                chunk = f.read(chunk_chars)
                if chunk and not ends_line:
                    yield "\n"
                while chunk:
                    yield chunk
                    ends_line = chunk.endswith("\n")
                    chunk = f.read(chunk_chars)
        except UnicodeDecodeError:
            offset, line = _first_bad_byte(path)
            raise CorpusError(
                f"{path} is not valid UTF-8: bad byte at offset {offset} (line {line}); "
                f"convert it first, e.g. iconv -f latin1 -t utf-8 {path}"
            ) from None


def _first_bad_byte(path: Path) -> tuple[int, int]:
    """Byte offset and 1-based line of the first invalid UTF-8 sequence in `path`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed, newlines = 0, 0
    with open(path, "rb") as f:
        while block := f.read(1 << 16):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                data = pending + block
                return consumed - len(pending) + e.start, newlines + data[: e.start].count(b"\n") + 1
            consumed += len(block)
            newlines += block.count(b"\n")
    return consumed, newlines + 1  # truncated sequence at the end of the file


def split_chunks(chunks: Iterator[str], at: int) -> Iterator[tuple[int, str]]:
    """(part, text) pairs: part 0 for the first `at` characters, part 1 for the rest."""
    seen = 0
    for chunk in chunks:
        if seen >= at:
            yield 1, chunk
        elif seen + len(chunk) <= at:
            yield 0, chunk
        else:
            yield 0, chunk[: at - seen]
            yield 1, chunk[at - seen :]
        seen += len(chunk)


@dataclass
class Corpus:
    """A tokenized corpus: training and validation ids (memory-mapped) and their sizes in characters."""

    name: str
    path: str  # absolute, so a resumed run can find it again
    tokenizer: Tokenizer
    train: np.ndarray  # (train_tokens,)
    val: np.ndarray  # (val_tokens,)
    train_chars: int
    val_chars: int


def load_corpus(
    path: str | os.PathLike,
    val_frac: float,
    tokenizer: Tokenizer | None = None,
    fit: Callable[[Callable[[], Iterator[str]]], Tokenizer] | None = None,
    fit_key: str = "char",
    cache_dir: Path | None = None,
) -> Corpus:
    """Read, split and encode `path`, using the cache when it is fresh.

    With no `tokenizer`, `fit(train_text)` builds one from a callable that yields the
    training part's chunks (char vocabularies look at the whole text: see `fit_chars`).
    """
    files = corpus_files(path)
    name = Path(path).stem or "corpus"
    signature = _signature(files, val_frac)
    cache = _cache_dir(cache_dir)
    meta_path = cache / f"{name}-{_key(signature)}.json" if cache else None
    meta = _read_json(meta_path)
    total = meta["chars"] if meta else sum(len(c) for c in read_chunks(files))
    if total < MIN_CHARS:
        what = "empty" if total == 0 else f"only {total} characters long"
        raise CorpusError(f"{path} is {what}: chargen needs at least a few thousand characters of text to train on")
    split = total - max(1, int(total * val_frac))

    def train_text() -> Iterator[str]:
        return (text for part, text in split_chunks(read_chunks(files), split) if part == 0)

    if tokenizer is None:
        tokenizers = (meta or {}).get("tokenizers", {})
        if fit_key in tokenizers:
            from chargen.tokenizer import tokenizer_from_dict

            tokenizer = tokenizer_from_dict(_unhex(tokenizers[fit_key]))
        else:
            tokenizer = (fit or fit_chars(files))(train_text)
            tokenizers[fit_key] = tokenizer.to_dict()
            _write_json(meta_path, {"chars": total, "tokenizers": tokenizers})
    elif meta is None:
        _write_json(meta_path, {"chars": total, "tokenizers": {}})
    train, val = _encoded(files, split, tokenizer, cache, f"{name}-{_key(signature + tokenizer.fingerprint())}")
    return Corpus(name, str(Path(path).resolve()), tokenizer, train, val, split, total - split)


def fit_chars(files: list[Path]) -> Callable[[Callable[[], Iterator[str]]], Tokenizer]:
    """A char vocabulary from the whole text, so validation characters are never unknown."""
    from chargen.tokenizer import CharTokenizer

    return lambda _train_text: CharTokenizer.fit(read_chunks(files))


def _encoded(
    files: list[Path], split: int, tokenizer: Tokenizer, cache: Path | None, stem: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, val ids), from the cache or encoded now, streaming."""
    dtype = tokenizer.dtype
    if cache is None:
        parts: list[list[np.ndarray]] = [[], []]
        for part, text in split_chunks(read_chunks(files), split):
            parts[part].append(tokenizer.encode(text))
        return tuple(np.concatenate(p).astype(dtype) for p in parts)  # type: ignore[return-value]
    paths = [cache / f"{stem}.train.bin", cache / f"{stem}.val.bin"]
    if not all(p.exists() for p in paths):
        made = [tempfile.mkstemp(dir=cache, prefix=".encode-") for _ in paths]  # (fd, path) each
        try:
            with contextlib.ExitStack() as files_open:
                outs = [files_open.enter_context(os.fdopen(fd, "wb")) for fd, _ in made]
                for part, text in split_chunks(read_chunks(files), split):
                    outs[part].write(tokenizer.encode(text).astype(dtype).tobytes())
            for (_, tmp), path in zip(made, paths):
                os.replace(tmp, path)
        finally:
            for _, tmp in made:
                Path(tmp).unlink(missing_ok=True)
    return tuple(  # type: ignore[return-value]
        np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.zeros(0, dtype) for p in paths
    )


def _signature(files: list[Path], val_frac: float) -> str:
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return json.dumps([stats, val_frac])


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_dir(explicit: Path | None) -> Path | None:
    """Where id caches live; None when no folder can be written (then nothing is cached)."""
    base = os.environ.get("CHARGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chargen"
    )
    path = Path(explicit or base)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path if os.access(path, os.W_OK) else None
    except OSError:
        return None


def _read_json(path: Path | None) -> dict | None:
    try:
        return json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None


def _write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".meta-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, default=lambda b: {"__hex__": b.hex()})
    os.replace(tmp, path)


def _unhex(data):
    if isinstance(data, dict):
        return bytes.fromhex(data["__hex__"]) if set(data) == {"__hex__"} else {k: _unhex(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unhex(v) for v in data]
    return data


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

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, device, seed: int = 0) -> None:
        import torch

        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        usable = len(ids) - seq_len
        self.windows = usable // seq_len // batch_size  # per epoch, whatever the offset
        self.stream_len = self.windows * seq_len
        self.device = torch.device(device)
        self._offset = (-1, 0)  # (epoch, its offset)
        if self.device.type == "cpu":
            self.ids = ids  # memory-mapped; each window is copied out as it is needed
        else:
            self.ids = torch.from_numpy(np.asarray(ids).astype(np.int64)).to(self.device)

    def offset(self, epoch: int) -> int:
        if self._offset[0] != epoch:  # drawn once per epoch, from (seed, epoch) alone
            import torch

            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._offset = (epoch, int(torch.randint(self.seq_len, (1,), generator=g)))
        return self._offset[1]

    def window(self, epoch: int, k: int):
        """(x, y) of window k of `epoch`, each (B, T) int64 on the device."""
        import torch

        start, n = self.offset(epoch), self.batch_size * self.stream_len
        lo, hi = k * self.seq_len, (k + 1) * self.seq_len
        if isinstance(self.ids, np.ndarray):
            x = self.ids[start : start + n].reshape(self.batch_size, -1)[:, lo:hi]
            y = self.ids[start + 1 : start + n + 1].reshape(self.batch_size, -1)[:, lo:hi]
            return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
        x = self.ids[start : start + n].view(self.batch_size, -1)[:, lo:hi]
        y = self.ids[start + 1 : start + n + 1].view(self.batch_size, -1)[:, lo:hi]
        return x, y
