"""SentencePiece vocabularies: exact round trips, byte fallback, streaming decode, losses per character."""

import json

import pytest

from chargen import checkpoint
from chargen.config import SampleConfig
from chargen.data import load_corpus
from chargen.subword import SentencePieceTokenizer, fitter
from chargen.tokenizer import tokenizer_from_dict

from .conftest import make_text

MIXED = "Hello,   world!\n\nПривет, мир.\n你好，世界。\n🙂 emoji  and\ttabs\n   indented line\n"


@pytest.fixture(scope="module")
def sp():
    lines = (make_text(300) + MIXED * 20).split("\n")
    return SentencePieceTokenizer.train(lines, vocab_size=400)


def test_round_trip_of_mixed_scripts_spaces_and_newlines(sp):
    for text in (MIXED, make_text(20, seed=9), "  two leading spaces", "trailing   \n\n\n", "a\n \n  b"):
        assert sp.decode(sp.encode(text).tolist()) == text


def test_byte_fallback_for_characters_never_seen(sp):
    text = "snow ☃ and 𝄞 clef and ß"
    ids = sp.encode(text).tolist()
    assert sp.decode(ids) == text
    assert any(sp.sp.is_byte(i) for i in ids)
    assert sp.unk_id not in ids


def test_streaming_decode_equals_one_shot_at_every_prefix(sp):
    text = "the ☃ king 你好 🙂!  \n" + MIXED
    ids = sp.encode(text).tolist()
    decoder, streamed = sp.decoder(), ""
    for k, token in enumerate(ids, 1):
        streamed += decoder.feed(token)
        assert "\ufffd" not in streamed
        whole = sp.decode(ids[:k])
        if not whole.endswith("\ufffd"):  # at a character boundary the two agree exactly
            assert streamed == whole
        assert text.startswith(streamed)
    assert streamed == text


def test_serialised_inside_a_checkpoint_with_weights_only(sp, tmp_path):
    path = tmp_path / "tok.pt"
    checkpoint.save({"tokenizer": sp.to_dict()}, path)
    again = tokenizer_from_dict(checkpoint.load(path)["tokenizer"])
    assert again.kind == "sp" and again.vocab_size == sp.vocab_size
    assert again.encode(MIXED).tolist() == sp.encode(MIXED).tolist()


def test_the_validation_tail_is_not_in_the_training_input(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_text(make_text(300) + "VALIDATIONONLY marker line\n" * 20)  # under 5% of the text
    seen = []
    train = SentencePieceTokenizer.train.__func__

    def spy(cls, lines, *a, **k):
        lines = list(lines)
        seen.extend(lines)
        return train(cls, lines, *a, **k)

    monkeypatch.setattr(SentencePieceTokenizer, "train", classmethod(spy))
    fit, key = fitter(340, "unigram")
    corpus = load_corpus(path, 0.05, fit=fit, fit_key=key)
    assert seen and not any("VALIDATIONONLY" in line for line in seen)
    assert "VALIDATIONONLY" in corpus.tokenizer.decode(corpus.val.tolist())


def test_the_id_cache_is_keyed_by_the_tokenizer(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CHARGEN_CACHE", str(cache))
    path = tmp_path / "c.txt"
    path.write_text(make_text(300))
    bins = lambda: sorted(p.name for p in cache.glob("*.bin"))

    def load(vocab_size):
        fit, key = fitter(vocab_size, "unigram")
        return load_corpus(path, 0.1, fit=fit, fit_key=key)

    a = load(340)
    first = bins()
    b = load(380)
    assert len(bins()) == 4 and b.tokenizer.vocab_size == 380
    again = load(340)
    assert len(bins()) == 4 and set(first) <= set(bins())
    assert again.tokenizer.fingerprint() == a.tokenizer.fingerprint()


def test_per_character_loss_of_a_char_model_equals_its_per_token_loss(tmp_path, corpus_path):
    from .conftest import train_tiny

    train_tiny(corpus_path, tmp_path, steps=20, eval_every=20)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["chars_per_token"] == 1.0
    assert record["val_loss"] == pytest.approx(record["val_nats_per_token"], abs=1e-5)


def test_a_subword_model_end_to_end(tmp_path, corpus_path):
    from click.testing import CliRunner

    from chargen.cli import cli

    out = tmp_path / "sp"
    runner = CliRunner()
    args = ["train", str(corpus_path), "-o", str(out), "--tokenizer", "sp", "--vocab-size", "400", "--steps", "30"]
    args += [
        "--eval-every",
        "15",
        "--hidden",
        "32",
        "--embed",
        "16",
        "--layers",
        "1",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
    ]
    result = runner.invoke(cli, args, prog_name="chargen")
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["chars_per_token"] > 1.5
    assert record["val_loss"] < record["val_nats_per_token"]  # nats per char: a token holds several chars
    info = json.loads(runner.invoke(cli, ["info", str(out / "best.pt"), "--json"]).stdout)
    assert info["tokenizer"] == {"kind": "sp", "vocab_size": 400}
    sample = runner.invoke(
        cli, ["sample", "-c", str(out / "best.pt"), "--prime", "the 王", "-l", "80", "--seed", "2", "--stop", "e k"]
    )
    assert sample.exit_code == 0 and sample.stdout.startswith("the 王") and "\ufffd" not in sample.stdout
    assert "e k" not in sample.stdout[len("the 王") :] and "never saw" not in sample.stderr
    scored = json.loads(runner.invoke(cli, ["eval", "-c", str(out / "best.pt"), str(corpus_path), "--json"]).stdout)
    assert scored["chars"] == len(corpus_path.read_text()) and 0 < scored["nats_per_char"] < 5

    from chargen.chat.conversation import Conversation
    from chargen.generate import Generator

    chat = Conversation(Generator.load(out / "best.pt"), SampleConfig(length=60, seed=1, stop=("\n\n",)))
    assert chat.feed("the king ☃") == []  # byte fallback: nothing is unknown to a subword model
    answer = "".join(chat.answer())
    assert 0 < len(answer) <= 60 and "\ufffd" not in answer
    assert answer.find("\n\n") in (-1, len(answer) - 2)  # a blank line ends it (kept: the state read it)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sampled_bytes_always_form_whole_characters(sp, dtype):
    """Even an untrained model, drawing byte pieces at random, writes no replacement characters."""
    import torch

    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.model import CharLM

    torch.manual_seed(0)
    model = CharLM(sp.vocab_size, ModelConfig(layers=1, hidden=16, embed=8))
    with torch.no_grad():
        model.head.bias[list(sp.byte_pieces())] += 4.0  # make byte pieces the likeliest draws
    text = "".join(Generator(model, sp, dtype=getattr(torch, dtype)).generate("x", length=400, temp=1.0, seed=1))
    assert len(text) == 400 and "\ufffd" not in text


def test_a_vocabulary_with_no_room_for_every_character_writes_the_rarest_as_bytes(tmp_path):
    """660 distinct characters (Chinese with English), a vocabulary of 500: once refused, now the rarest go to bytes."""
    import random

    from click.testing import CliRunner

    from chargen.cli import cli

    rng = random.Random(0)
    hanzi = [chr(0x4E00 + i) for i in range(600)]
    latin = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.;:!?'- "
    weights = [1 / (i + 1) for i in range(len(hanzi))]  # some characters common, most rare, as in real text
    lines = ["".join(rng.choices(hanzi, weights, k=30)) + " " + "".join(rng.choices(latin, k=20)) for _ in range(2000)]
    text = "\n".join(lines) + "\n"
    assert len(set(text)) >= 660
    path = tmp_path / "mixed.txt"
    path.write_text(text)
    args = ["train", str(path), "-o", str(tmp_path / "run"), "--tokenizer", "sp", "--vocab-size", "500", "--steps", "2"]
    result = CliRunner().invoke(cli, [*args, "--hidden", "8", "--embed", "4", "--layers", "1", "--eval-every", "2"])
    assert result.exit_code == 0, result.stderr
    assert "room for 180 of the text's" in result.stderr and "are written as UTF-8 bytes" in result.stderr
    sp = tokenizer_from_dict(checkpoint.read(tmp_path / "run" / "best.pt").tokenizer.to_dict())
    assert sp.vocab_size == 500 and sp.decode(sp.encode(text).tolist()) == text


def test_a_vocabulary_too_small_for_the_byte_pieces_is_refused_before_training():
    from click.testing import CliRunner

    from chargen.cli import cli

    result = CliRunner().invoke(cli, ["train", "x.txt", "--tokenizer", "sp", "--vocab-size", "200"])
    assert result.exit_code == 2 and "--vocab-size must be from 264 (256 go to bytes)" in result.stderr


def test_a_failed_sentencepiece_trainer_says_why_and_what_to_do(tmp_path):
    from .test_cli import one_clear_line, run

    blank = tmp_path / "blank.txt"
    blank.write_text("\n" * 2000)  # text enough, and no line SentencePiece can learn a piece from
    done = run("train", blank, "--tokenizer", "sp", "--vocab-size", 300, "--steps", 1, "-o", tmp_path / "run")
    one_clear_line(done, "could not build a vocabulary of 300", "[!sentences_.empty()]", "--tokenizer char")
    assert "smaller --vocab-size" in done.stderr
