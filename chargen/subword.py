"""SentencePiece subword vocabularies, with byte fallback so no text is ever unknown.

The model is trained by the sentencepiece package on the training part of a corpus only,
sampling at most `SAMPLE_SENTENCES` lines of a big one. Its bytes live inside the checkpoint.
Text round-trips exactly: no normalisation, no dummy prefix, runs of spaces kept, newline a
piece of its own. Decoding streams: byte pieces are held until they complete a character.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import sentencepiece as spm

from chargen.errors import CorpusError
from chargen.tokenizer import StreamDecoder, Tokenizer, char_counts

SAMPLE_SENTENCES = 2_000_000


class SentencePieceTokenizer(Tokenizer):
    kind = "sp"

    def __init__(self, model: bytes) -> None:
        self.model = bytes(model)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model)
        self.unk_id = self.sp.unk_id()
        self._is_byte = np.array([self.sp.is_byte(i) for i in range(self.sp.get_piece_size())])
        self._byte = {i: int(self.sp.id_to_piece(i)[3:5], 16) for i in np.flatnonzero(self._is_byte).tolist()}

    @classmethod
    def train(
        cls, lines: Iterable[str], vocab_size: int, model_type: str = "unigram", coverage: float = 0.9995
    ) -> SentencePieceTokenizer:
        """A vocabulary of `vocab_size` pieces learnt from `lines`; characters outside the most frequent
        `coverage` of the text are left to byte fallback."""
        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(line for line in lines if line),
                model_writer=out,
                vocab_size=vocab_size,
                model_type=model_type,
                byte_fallback=True,
                character_coverage=coverage,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                user_defined_symbols=["\n"],
                input_sentence_size=SAMPLE_SENTENCES,
                shuffle_input_sentence=True,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as e:
            high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", str(e))
            if high:
                hint = f"this text is too small for it: use --vocab-size {high.group(2)} or less"
            else:  # SentencePiece's own reason, often only the check that failed ([!sentences_.empty()])
                reason = str(e).strip() or type(e).__name__
                hint = f"its trainer failed ({reason}): try a smaller --vocab-size, or --tokenizer char"
            raise CorpusError(f"SentencePiece could not build a vocabulary of {vocab_size}: {hint}") from None
        return cls(out.getvalue())

    @classmethod
    def from_dict(cls, data: dict) -> SentencePieceTokenizer:
        if not isinstance(data.get("model"), bytes):
            raise ValueError("its SentencePiece model is not bytes")
        return cls(data["model"])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": self.model, "vocab_size": self.vocab_size}

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def banned_ids(self) -> list[int]:
        return [i for i in (self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) if i >= 0]

    def byte_pieces(self) -> dict[int, int]:
        return self._byte

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.sp.encode(text), dtype=self.dtype)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def decoder(self) -> StreamDecoder:
        return _PieceDecoder(self)


class _PieceDecoder(StreamDecoder):
    """Holds byte pieces until they form whole UTF-8 characters; other pieces come out at once."""

    def __init__(self, tokenizer: SentencePieceTokenizer) -> None:
        super().__init__(tokenizer)
        self.pending: list[int] = []

    def feed(self, token: int) -> str:
        tok = self.tokenizer
        self.pending.append(token)
        if token in tok._byte:
            raw = bytes(tok._byte[i] for i in self.pending if i in tok._byte)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if e.reason == "unexpected end of data" and len(raw) - e.start < 4:
                    return ""  # the rest of this character is still to come
        text, self.pending = tok.decode(self.pending), []
        return text


META_PIECES = 256 + 4  # byte pieces, unknown, begin, end, newline


def fitter(
    vocab_size: int, model_type: str, note: Callable[[str], None] = lambda text: None
) -> tuple[Callable[[Callable[[], Iterator[str]]], Tokenizer], str]:
    """For `load_corpus`: a function that trains on the training text's lines, and its cache key.

    A text with more distinct characters than the vocabulary has room for (Chinese, say, in a
    small vocabulary) keeps its most frequent characters as pieces, leaving a quarter of the
    room for longer pieces; the rarest characters are written as UTF-8 bytes, and `note` says
    how many."""

    def fit(train_text: Callable[[], Iterator[str]]) -> Tokenizer:
        counts = char_counts(train_text())
        counts.pop("\n", None)  # a piece of its own already
        room = vocab_size - META_PIECES
        if len(counts) <= room:
            return SentencePieceTokenizer.train(_lines(train_text()), vocab_size, model_type)
        keep = max(1, room * 3 // 4)
        rare = list(counts)[keep:]
        share = sum(counts[c] for c in rare) / max(1, sum(counts.values()))
        note(
            f"a vocabulary of {vocab_size} has room for {keep:,} of the text's {len(counts):,} distinct characters: "
            f"the {len(rare):,} rarest ({share:.2%} of the training text) are written as UTF-8 bytes"
        )
        drop = dict.fromkeys(map(ord, rare))
        lines = (line.translate(drop) for line in _lines(train_text()))
        return SentencePieceTokenizer.train(lines, vocab_size, model_type, coverage=1.0)

    return fit, f"sp-{model_type}-{vocab_size}"


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    """Lines across chunk boundaries, without their newlines."""
    tail = ""
    for chunk in chunks:
        lines = (tail + chunk).split("\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail
