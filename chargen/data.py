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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chargen.errors import CorpusError
from chargen.files import atomic_write
from chargen.tokenizer import CharTokenizer, Tokenizer, char_counts

if TYPE_CHECKING:
    from chargen.lines import LineSets

CHUNK_CHARS = 1 << 20
Progress = Callable[[str, int, "int | None"], None]  # (what is being done, characters done, in all or None)
MIN_CHARS = 100  # below this there is nothing to learn, whatever the settings


def corpus_files(path: str | os.PathLike, skipped: list[str] | None = None) -> list[Path]:
    """The text files that `path` names: itself, or a folder's non-hidden files in sorted order.

    In a folder, binary files (a NUL byte in their first 8 KiB), empty files and subfolders
    that cannot be read are left out, each with a line in `skipped`."""
    path = Path(path)
    skipped = [] if skipped is None else skipped
    if not path.exists():
        raise CorpusError(f"{path} does not exist: give the path of a text file or a folder of them")
    if path.is_file():
        if _looks_binary(path):
            raise CorpusError(f"{path} looks like a binary file (it holds NUL bytes): chargen trains on UTF-8 text")
        return [path]
    if not path.is_dir():
        raise CorpusError(f"{path} is not a file or a folder (a pipe, socket or device): give a text file")

    def unreadable(e: OSError) -> None:
        skipped.append(f"{e.filename}: cannot be read ({e.strerror}), left out")

    texts = []
    for root, dirs, names in os.walk(path, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            p = Path(root) / name
            if name.startswith(".") or not p.is_file():
                continue
            try:
                if p.stat().st_size == 0:
                    continue
                if _looks_binary(p):
                    skipped.append(f"{p}: binary (a NUL byte in its first 8 KiB), left out")
                    continue
            except OSError as e:
                unreadable(e)
                continue
            texts.append(p)
    if not texts:
        raise CorpusError(f"{path} is a folder with no text files in it: put UTF-8 .txt files there")
    return sorted(texts)


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def read_chunks(files: list[Path], chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of `files`, in chunks of about `chunk_chars` characters; each file starts on a new line."""
    ends_line = True
    for path in files:
        try:
            with open(path, encoding="utf-8-sig", newline=None) as f:
                chunk, line = f.read(chunk_chars), 0
                if chunk and not ends_line:
                    yield "\n"
                while chunk:
                    if "\0" in chunk:  # anywhere in a file, as in its first 8 KiB: never a vocabulary symbol
                        raise CorpusError(
                            f"{path} holds a NUL byte (line {line + chunk[: chunk.index(chr(0))].count(chr(10)) + 1}):"
                            " it looks binary; chargen trains on UTF-8 text, so remove the NUL bytes or the file"
                        )
                    line += chunk.count("\n")
                    yield chunk
                    ends_line = chunk.endswith("\n")
                    chunk = f.read(chunk_chars)
        except UnicodeDecodeError:
            offset, line = _first_bad_byte(path)
            raise CorpusError(
                f"{path} is not valid UTF-8: bad byte at offset {offset} (line {line}); "
                f"convert it first, e.g. iconv -f latin1 -t utf-8 {path}"
            ) from None


def read_text(files: list[Path], limit: int | None = None) -> str:
    """The text of `files` as one string: all of it, or its first `limit` characters (read no further)."""
    parts, length = [], 0
    for chunk in read_chunks(files):
        parts.append(chunk)
        length += len(chunk)
        if limit is not None and length >= limit:
            break
    return "".join(parts)[:limit]


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
    fingerprint: str = ""  # SHA-256 of the ids: the same text under the same tokenizer, and nothing else
    skipped: list[str] = field(default_factory=list)  # files and folders of a folder corpus that were left out
    lines: LineSets | None = None  # in line mode, the training and validation lines


def load_corpus(
    path: str | os.PathLike,
    val_frac: float,
    tokenizer: Tokenizer | None = None,
    fit: Callable[[Callable[[], Iterator[str]]], Tokenizer] | None = None,
    fit_key: str = "char",
    cache_dir: Path | None = None,
    lines: bool = False,
    val_chars: int | None = None,
    progress: Progress | None = None,
    base: Tokenizer | None = None,
) -> Corpus:
    """Read, split and encode `path`, using the cache when it is fresh and intact.

    With no `tokenizer`, `fit(train_text)` builds one from a callable that yields the
    training part's chunks (char vocabularies look at the whole text: see `fit_chars`).
    Every cache file carries a checksum; one that does not match is rebuilt, never trusted.
    With `lines`, each line is an example and a random `val_frac` of them is held out
    (`chargen.lines`); the text is then read into memory, as a list is small. `val_chars` caps
    the validation part (the last `val_frac` of the text, at most this many characters; the
    rest is trained on), so a corpus of gigabytes is scored in seconds. `progress` hears of
    each chunk read while counting, fitting and encoding. With `base` (a fine-tuned run's parent),
    the text is encoded with base's vocabulary, a char vocabulary grown by the characters it lacks.
    """
    skipped: list[str] = []
    files = corpus_files(path, skipped)
    name = Path(path).stem or "corpus"
    signature = _signature(files, val_frac) + (":lines" if lines else "") + (f":{val_chars}" if val_chars else "")
    cache = _cache_dir(cache_dir)
    meta_path = cache / f"{name}-{_key(signature)}.json" if cache else None
    meta = _read_json(meta_path)
    if not (isinstance(meta, dict) and isinstance(meta.get("chars"), int) and isinstance(meta.get("tokenizers"), dict)):
        # one pass counts the characters and fits the char vocabulary (from the whole text, see fit_chars)
        counts = char_counts(_told(read_chunks(files), "reading", None, progress))
        meta = {"chars": sum(counts.values()), "tokenizers": {"char": CharTokenizer(list(counts)).to_dict()}}
        _write_json(meta_path, meta)
    total = meta["chars"]
    if total < MIN_CHARS:
        what = "empty" if total == 0 else f"only {total} characters long"
        raise CorpusError(f"{path} is {what}: chargen needs at least a few thousand characters of text to train on")
    split = total - min(max(1, int(total * val_frac)), val_chars or total)
    text: Callable[[], Iterator[str]] = lambda: read_chunks(files)
    line_sets = None
    if lines:
        from chargen.lines import LineSets, examples, joined
        from chargen.lines import split as split_lines

        train_lines, val_lines = split_lines(examples(read_chunks(files)), val_frac)
        parts = [joined(train_lines), joined(val_lines)]
        text, split, total = (lambda: iter(parts)), len(parts[0]), len(parts[0]) + len(parts[1])
        line_sets = LineSets.of(train_lines, val_lines)

    def train_text() -> Iterator[str]:
        return (chunk for part, chunk in split_chunks(text(), split) if part == 0)

    if tokenizer is None and base is not None:  # a fine-tuned run: its parent's vocabulary, grown for this text
        tokenizer = base
        if base.kind == "char":
            found = _cached_tokenizer(meta["tokenizers"].get("char")) or fit_chars(files, progress, total)(train_text)
            tokenizer = base.grown(found.chars[1:])
    if tokenizer is None:
        tokenizer = _cached_tokenizer(meta["tokenizers"].get(fit_key))
        if tokenizer is None:
            tokenizer = (fit or fit_chars(files, progress, total))(train_text)
            meta["tokenizers"][fit_key] = tokenizer.to_dict()
            _write_json(meta_path, meta)
    train, val, fingerprint = _encoded(
        lambda: _told(text(), "encoding", total, progress),
        split,
        tokenizer,
        cache,
        f"{name}-{_key(signature + tokenizer.fingerprint())}",
    )
    path = str(Path(path).resolve())
    return Corpus(name, path, tokenizer, train, val, split, total - split, fingerprint, skipped, line_sets)


def _cached_tokenizer(data) -> Tokenizer | None:
    from chargen.tokenizer import tokenizer_from_dict

    try:
        return tokenizer_from_dict(_unhex(data)) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError, RuntimeError):
        return None


def fit_chars(
    files: list[Path], progress: Progress | None = None, total: int | None = None
) -> Callable[[Callable[[], Iterator[str]]], Tokenizer]:
    """A char vocabulary from the whole text, so validation characters are never unknown."""
    return lambda _train_text: CharTokenizer.fit(_told(read_chunks(files), "counting characters", total, progress))


def _told(chunks: Iterator[str], what: str, total: int | None, progress: Progress | None) -> Iterator[str]:
    """`chunks`, telling `progress` how far they have come."""
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if progress is not None:
            progress(what, done, total)


def _encoded(
    text: Callable[[], Iterator[str]], split: int, tokenizer: Tokenizer, cache: Path | None, stem: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """(train ids, val ids, their fingerprint), from an intact cache or encoded now, streaming."""
    dtype = tokenizer.dtype
    if cache is None:
        parts: list[list[np.ndarray]] = [[], []]
        for part, chunk in split_chunks(text(), split):
            parts[part].append(tokenizer.encode(chunk).astype(dtype))
        train, val = (np.concatenate(p) if p else np.zeros(0, dtype) for p in parts)
        return train, val, _fingerprint(*(hashlib.sha256(a.tobytes()).hexdigest() for a in (train, val)))
    paths = [cache / f"{stem}.train.bin", cache / f"{stem}.val.bin"]
    meta_path = cache / f"{stem}.json"
    want = {"tokenizer": tokenizer.fingerprint(), "dtype": dtype.str}
    meta = _read_json(meta_path)
    if not (isinstance(meta, dict) and {**meta, "parts": None} == {**want, "parts": None} and _intact(paths, meta)):
        hashes = [hashlib.sha256() for _ in paths]
        sizes = [0, 0]
        with contextlib.ExitStack() as stack:
            outs = [stack.enter_context(atomic_write(p)) for p in paths]
            for part, chunk in split_chunks(text(), split):
                data = tokenizer.encode(chunk).astype(dtype).tobytes()
                outs[part].write(data)
                hashes[part].update(data)
                sizes[part] += len(data)
        meta = {**want, "parts": [{"bytes": n, "sha256": h.hexdigest()} for n, h in zip(sizes, hashes)]}
        _write_json(meta_path, meta)  # last: a cache without it is rebuilt
    train, val = (np.memmap(p, dtype=dtype, mode="r") if p.stat().st_size else np.zeros(0, dtype) for p in paths)
    return train, val, _fingerprint(*(part["sha256"] for part in meta["parts"]))


def _intact(paths: list[Path], meta: dict) -> bool:
    """The cached id files have the sizes and SHA-256 that were recorded when they were written."""
    try:
        for path, part in zip(paths, meta["parts"]):
            if path.stat().st_size != part["bytes"]:
                return False
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
            if h.hexdigest() != part["sha256"]:
                return False
        return len(meta["parts"]) == len(paths)
    except (OSError, KeyError, TypeError):
        return False


def _fingerprint(train_sha: str, val_sha: str) -> str:
    return hashlib.sha256(f"{train_sha}:{val_sha}".encode()).hexdigest()


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
    """What `_write_json` wrote, or None when it is missing, damaged or edited."""
    try:
        wrapped = json.loads(path.read_text()) if path else None
        body = json.dumps(wrapped["data"], sort_keys=True)
        return wrapped["data"] if hashlib.sha256(body.encode()).hexdigest() == wrapped["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return
    plain = json.loads(json.dumps(data, default=lambda b: {"__hex__": b.hex()}))
    body = json.dumps(plain, sort_keys=True)
    with atomic_write(path, text=True) as f:
        json.dump({"sha256": hashlib.sha256(body.encode()).hexdigest(), "data": plain}, f)


def _unhex(data):
    if isinstance(data, dict):
        return bytes.fromhex(data["__hex__"]) if set(data) == {"__hex__"} else {k: _unhex(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_unhex(v) for v in data]
    return data
