"""SentencePiece subword vocabularies, with byte fallback so no text is ever unknown.

The model is trained by the sentencepiece package on the training part of a corpus only,
sampling at most `SAMPLE_SENTENCES` lines of a big one. Its bytes live inside the checkpoint.
Text round-trips exactly: no normalisation, no dummy prefix, runs of spaces kept, newline a
piece of its own. Decoding streams: byte pieces are held until they complete a character.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import sentencepiece as spm

from chargen.errors import CorpusError
from chargen.tokenizer import StreamDecoder, Tokenizer

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
    def train(cls, lines: Iterable[str], vocab_size: int, model_type: str = "unigram") -> SentencePieceTokenizer:
        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(line for line in lines if line),
                model_writer=out,
                vocab_size=vocab_size,
                model_type=model_type,
                byte_fallback=True,
                character_coverage=0.9995,
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
            if "required_chars" in str(e):
                need = str(e).split(" vs ")[-1].split(".")[0]
                hint = f"this text needs --vocab-size {need} or more (256 ids go to byte fallback)"
            else:
                hint = "try a smaller --vocab-size"
            raise CorpusError(f"SentencePiece could not build a vocabulary of {vocab_size}: {hint}") from None
        return cls(out.getvalue())

    @classmethod
    def from_dict(cls, data: dict) -> SentencePieceTokenizer:
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


def fitter(vocab_size: int, model_type: str) -> tuple[Callable[[Callable[[], Iterator[str]]], Tokenizer], str]:
    """For `load_corpus`: a function that trains on the training text's lines, and its cache key."""

    def fit(train_text: Callable[[], Iterator[str]]) -> Tokenizer:
        return SentencePieceTokenizer.train(_lines(train_text()), vocab_size, model_type)

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
