"""Tokenizers: text to ids and back, serialised as plain data that sits inside a checkpoint.

`CharTokenizer` has one id per Unicode code point seen in the corpus (any script, any
vocabulary size) and id 0 for the unknown symbol. `SentencePieceTokenizer` (subwords) lives
in `chargen.subword` and shares this interface.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import numpy as np

UNK = "\ufffd"  # what the unknown id decodes to; it is never sampled


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} is too large")


def code_points(text: str) -> np.ndarray:
    """(len(text),) uint32 code points, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def char_counts(chunks: Iterable[str]) -> dict[str, int]:
    """{character: count} over `chunks`, most frequent first (ties by code point)."""
    counts = np.zeros(0, dtype=np.int64)
    for chunk in chunks:
        seen = np.bincount(code_points(chunk))  # one pass, no sort: as fast as the text can be read
        if len(seen) > len(counts):
            counts = np.pad(counts, (0, len(seen) - len(counts)))
        counts[: len(seen)] += seen
    points = np.flatnonzero(counts)
    order = np.lexsort((points, -counts[points]))
    return {chr(p): int(counts[p]) for p in points[order]}


class Tokenizer:
    """The interface both tokenizers share."""

    kind: str
    unk_id: int | None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def decoder(self) -> StreamDecoder:
        """A decoder that turns ids into text as soon as the text is complete."""
        raise NotImplementedError

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that this vocabulary lacks, in order of appearance."""
        return []

    def byte_pieces(self) -> dict[int, int]:
        """{id: byte} of the byte-fallback pieces, if any."""
        return {}

    def banned_ids(self) -> list[int]:
        """Ids that are never sampled (the unknown symbol, control tokens)."""
        return [] if self.unk_id is None else [self.unk_id]

    def to_dict(self) -> dict:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes whenever the mapping from text to ids changes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=lambda b: b.hex()).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(self.vocab_size)


class StreamDecoder:
    """Feed ids one at a time; get back the text they complete (often '', for subwords)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def feed(self, token: int) -> str:
        raise NotImplementedError


class _CharDecoder(StreamDecoder):
    """One id, one character: nothing to hold back."""

    def feed(self, token: int) -> str:
        return self.tokenizer.chars[token]


class CharTokenizer(Tokenizer):
    kind = "char"
    unk_id = 0

    def __init__(self, chars: list[str]) -> None:
        self.chars = [UNK, *chars]  # id i decodes to self.chars[i]
        points = np.array([ord(c) for c in chars], dtype=np.int64)
        # id of every code point up to the highest one known (0, unknown, elsewhere): encoding is one lookup
        self._ids = np.zeros(int(points.max(initial=0)) + 2, dtype=id_dtype(len(self.chars)))
        self._ids[points] = np.arange(1, len(points) + 1)

    @classmethod
    def fit(cls, chunks: Iterable[str]) -> CharTokenizer:
        """A vocabulary of every character in `chunks`, most frequent first."""
        return cls(list(char_counts(chunks)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        points = np.minimum(code_points(text), len(self._ids) - 1)  # past the highest known: the last slot, 0
        return self._ids[points]

    def grown(self, chars: Iterable[str]) -> CharTokenizer:
        """This vocabulary, every id kept, with the characters of `chars` it lacks added after it, in order."""
        known = set(self.chars[1:])
        return CharTokenizer([*self.chars[1:], *(c for c in dict.fromkeys(chars) if c not in known)])

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def decoder(self) -> StreamDecoder:
        return _CharDecoder(self)

    def unknown(self, text: str) -> list[str]:
        ids = self.encode(text)
        return list(dict.fromkeys(c for c, i in zip(text, ids.tolist()) if i == self.unk_id))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars[1:]}


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """The tokenizer that `to_dict` wrote; ValueError for anything else."""
    kind = data.get("kind")
    if kind == "char":
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("its vocabulary is not a list of characters")
        if len(set(chars)) != len(chars):
            raise ValueError("its vocabulary repeats a character")
        return CharTokenizer(chars)
    if kind == "sp":
        from chargen.subword import SentencePieceTokenizer

        return SentencePieceTokenizer.from_dict(data)
    raise ValueError(f"unknown tokenizer kind {kind!r}")
