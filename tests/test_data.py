import numpy as np
import pytest
import torch

from chargen.data import corpus_files, load_corpus, read_chunks
from chargen.errors import CorpusError
from chargen.training.batchers import StreamBatcher, fit_batch

from .conftest import make_text


def test_bom_is_dropped_and_newlines_normalised(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffone\r\ntwo\rthree\n".encode())
    assert "".join(read_chunks([path])) == "one\ntwo\nthree\n"


def test_streaming_reads_in_chunks(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)
    chunks = list(read_chunks([path], chunk_chars=7))
    assert max(map(len, chunks)) == 7 and "".join(chunks) == "abcdefghij" * 10


def test_folder_is_its_text_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "c.bin").write_bytes(b"\0\1\2")
    (tmp_path / ".hidden").write_text("no")
    assert [p.name for p in corpus_files(tmp_path)] == ["a.txt", "b.txt"]
    assert "".join(read_chunks(corpus_files(tmp_path))) == "first\nsecond"  # files never run together


def test_invalid_utf8_names_the_byte_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline two\nabc\xff\xfedef\n")
    with pytest.raises(CorpusError, match=r"offset 21 \(line 3\)"):
        list(read_chunks([path]))


def test_split_is_contiguous_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_CACHE", str(tmp_path / "cache"))
    text = make_text(300)
    path = tmp_path / "c.txt"
    path.write_text(text)
    corpus = load_corpus(path, 0.1)
    n_val = int(len(text) * 0.1)
    tok = corpus.tokenizer
    assert tok.decode(corpus.train.tolist()) == text[:-n_val]
    assert tok.decode(corpus.val.tolist()) == text[-n_val:]
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint8
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = load_corpus(path, 0.1)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == cached
    assert np.array_equal(again.train, corpus.train)
    path.write_text(text + "ZZZ new characters ZZZ\n")  # a changed file is encoded again
    changed = load_corpus(path, 0.1)
    assert changed.tokenizer.vocab_size > tok.vocab_size
    assert changed.tokenizer.decode(changed.val.tolist()).endswith("ZZZ new characters ZZZ\n")


def test_validation_is_capped_and_the_rest_is_trained_on(tmp_path):
    text = make_text(300)
    path = tmp_path / "c.txt"
    path.write_text(text)
    told = []
    corpus = load_corpus(path, 0.5, val_chars=100, progress=lambda *a: told.append(a))
    assert corpus.val_chars == 100 and corpus.tokenizer.decode(corpus.val.tolist()) == text[-100:]
    assert corpus.train_chars == len(text) - 100
    encoding = [done for what, done, total in told if what == "encoding"]
    assert encoding == sorted(encoding) and encoding[-1] == len(text)  # reading is told as it goes
    assert load_corpus(path, 0.5).val_chars == len(text) // 2  # no cap: the whole fraction, a cache of its own


def test_a_run_from_before_the_cap_keeps_its_whole_validation_part(tiny_ckpt):
    from chargen import checkpoint

    data = checkpoint.load(tiny_ckpt)
    del data["train_config"]["val_chars"]
    assert checkpoint.ModelCheckpoint.from_dict(data).train_config.val_chars is None


def test_too_short_and_empty(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(empty, 0.1)
    with pytest.raises(CorpusError, match="too few"):
        fit_batch(50, 16, 64)
    assert fit_batch(1000, 16, 64) == 14


def test_batches_are_contiguous_windows_and_y_is_x_shifted():
    ids = np.arange(10_000, dtype=np.uint32) % 251
    raw = np.arange(10_000)
    batcher = StreamBatcher(ids, batch_size=4, seq_len=16, device="cpu", seed=3)
    start = batcher.offset(0)
    for k in range(3):
        x, y = batcher.window(0, k)
        assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
        assert torch.equal(y[:, :-1], x[:, 1:])
        for b in range(4):  # stream b continues where its previous window stopped
            lo = start + b * batcher.stream_len + k * 16
            assert x[b].tolist() == (raw[lo : lo + 16] % 251).tolist()
    offsets = [batcher.offset(e) for e in range(20)]  # each epoch's start moves within a window
    assert all(0 <= o < 16 for o in offsets) and len(set(offsets)) >= 5, offsets
