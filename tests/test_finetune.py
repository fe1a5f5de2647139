"""Fine-tuning (`chargen train --from`): the parent's ids and probabilities kept, new characters learnt, lineage
recorded, resume exact, the parent's shape enforced, and a parent checked like any checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import chargen
from chargen import checkpoint
from chargen.errors import CheckpointError, SettingError
from chargen.model import CharLM
from chargen.training import run
from tests.conftest import make_text

SMALL = dict(batch_size=4, seq_len=32, device="cpu", eval_every=20)
NEW = "æøåλ"  # characters the tiny parent never saw


@pytest.fixture(scope="module")
def new_text(tmp_path_factory):
    """A text of the parent's kind, with new characters in most words."""
    words = make_text(seed=3).split(" ")
    path = tmp_path_factory.mktemp("new") / "nordic.txt"
    path.write_text(" ".join(w + NEW[k % len(NEW)] * (k % 3 > 0) for k, w in enumerate(words)), encoding="utf-8")
    return path


def model_of(ckpt: checkpoint.ModelCheckpoint, weights=None) -> CharLM:
    model = CharLM(ckpt.vocab_size, ckpt.model_config)
    model.load_state_dict(weights or ckpt.weights)
    return model.eval()


def test_the_parents_ids_and_probabilities_are_kept_before_the_first_step(tiny_ckpt, new_text, tmp_path):
    parent = checkpoint.read(tiny_ckpt)
    trainer = run.prepare(new_text, parent=tiny_ckpt, out=tmp_path / "ft", steps=10, **SMALL)
    grown = trainer.corpus.tokenizer
    assert grown.chars[: parent.vocab_size] == parent.tokenizer.chars  # every old id kept
    assert set(grown.chars[parent.vocab_size :]) == set(NEW)
    old_text = make_text(n_lines=20, seed=9)  # of old characters only
    ids = torch.tensor(parent.tokenizer.encode(old_text)).long()[None]
    with torch.no_grad():
        before = model_of(parent)(ids)[0].softmax(-1)
        after = trainer.model.eval()(ids)[0].softmax(-1)
    assert (after[..., : parent.vocab_size] - before).abs().max() < 1e-6
    new = after[..., parent.vocab_size :]
    assert new.min() > 0 and new.sum(-1).max() < 1e-6  # unlikely, but possible


def test_new_characters_are_learnt_and_written(tiny_ckpt, new_text, tmp_path):
    result = chargen.train(new_text, parent=tiny_ckpt, out=tmp_path / "ft", steps=150, lr=1e-2, **SMALL)
    written = "".join(chargen.load(result.best_path, device="cpu").generate(length=400, temp=0.8, seed=1))
    assert set(NEW) & set(written), written


def test_lineage_is_recorded_shown_and_kept_by_a_further_fine_tune(tiny_ckpt, new_text, tmp_path):
    first = chargen.train(new_text, parent=tiny_ckpt, out=tmp_path / "a", steps=5, **SMALL)
    second = chargen.train(new_text, parent=first.best_path, out=tmp_path / "b", steps=5, **SMALL)
    info = subprocess.run(
        [sys.executable, "-m", "chargen", "info", "--json", str(second.best_path)], capture_output=True, text=True
    )
    lineage = json.loads(info.stdout)["lineage"]
    assert [r["name"] for r in lineage] == [str(first.best_path), str(tiny_ckpt)]
    assert lineage[0]["added"] == 0 and lineage[1]["added"] == len(NEW)
    assert lineage[1]["sha256"] == run.finetune.file_sha256(tiny_ckpt)
    assert lineage[1]["steps"] == checkpoint.read(tiny_ckpt).position.step
    shown = subprocess.run([sys.executable, "-m", "chargen", "info", str(second.best_path)], capture_output=True,
                           text=True).stdout  # fmt: skip
    assert f"fine-tuned   from {first.best_path}" in shown and f"{len(NEW)} characters added" in shown


def test_a_fine_tuned_run_resumes_exactly(tiny_ckpt, new_text, tmp_path):
    whole = run.prepare(new_text, parent=tiny_ckpt, out=tmp_path / "whole", steps=40, **SMALL)
    whole.run()
    part = run.prepare(new_text, parent=tiny_ckpt, out=tmp_path / "part", steps=40, **SMALL)
    part.run(stop_at=20)
    resumed = run.prepare(new_text, resume=tmp_path / "part" / "last.pt")
    resumed.run()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.lineage == whole.lineage and resumed.lineage[0]["name"] == str(tiny_ckpt)


def test_the_parents_shape_and_tokenizer_are_kept(tiny_ckpt, new_text, tmp_path):
    with pytest.raises(SettingError, match=r"^hidden is 32 in .*not 64: a fine-tuned model keeps its parent's"):
        run.prepare(new_text, parent=tiny_ckpt, out=tmp_path / "x", hidden=64, **SMALL)
    with pytest.raises(SettingError, match="^tokenizer is 'char'"):
        run.prepare(new_text, parent=tiny_ckpt, out=tmp_path / "x", tokenizer="sp", **SMALL)
    done = subprocess.run(
        [sys.executable, "-m", "chargen", "train", str(new_text), "--from", str(tiny_ckpt), "--layers", "3"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --layers is 1 in ") and "Traceback" not in done.stderr
    with pytest.raises(Exception, match="--from starts a new run and --resume continues one"):
        run.prepare(new_text, parent=tiny_ckpt, resume=tiny_ckpt)


def test_the_bundled_model_fine_tunes_by_name(new_text, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "chargen", "train", str(new_text), "--from", "shakespeare", "--steps", "2",
         "--batch-size", "2", "--seq-len", "16", "--device", "cpu", "-o", str(tmp_path / "ft")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--from shakespeare: 2x384 LSTM" in done.stderr and "characters of this text were new to it" in done.stderr
    assert "fine-tuning a 2x384 LSTM" in done.stderr
    saved = checkpoint.read(tmp_path / "ft" / "best.pt")
    assert saved.lineage[0]["name"] == "shakespeare" and saved.lineage[0]["corpus"] == "tinyshakespeare"


def test_a_damaged_or_hostile_parent_is_refused(new_text, tiny_ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        run.prepare(new_text, parent=cut, out=tmp_path / "x", **SMALL)

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "chargen-checkpoint", "model": Boom()}, hostile)
    with pytest.raises(CheckpointError, match="refused unopened"):
        run.prepare(new_text, parent=hostile, out=tmp_path / "x", **SMALL)


def test_line_mode_from_a_running_text_parent_and_from_a_line_mode_parent(tiny_ckpt, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{w.capitalize()}ø{k}\n" for k, w in enumerate(make_text(seed=5).split()[:400])))
    first = chargen.train(names, parent=tiny_ckpt, out=tmp_path / "a", steps=20, lines=True, **SMALL)
    saved = checkpoint.read(first.best_path)
    assert saved.lines is not None and saved.train_config.lines
    second = chargen.train(names, parent=first.best_path, out=tmp_path / "b", steps=20, lines=True, **SMALL)
    again = checkpoint.read(second.best_path)
    assert again.lines is not None and again.tokenizer.chars == saved.tokenizer.chars


def test_a_sentencepiece_parent_keeps_its_pieces(corpus_path, new_text, tmp_path):
    parent = chargen.train(corpus_path, out=tmp_path / "sp", tokenizer="sp", vocab_size=300, steps=10, **SMALL)
    pieces = checkpoint.read(parent.best_path).tokenizer
    child = chargen.train(new_text, parent=parent.best_path, out=tmp_path / "ft", steps=10, **SMALL)
    saved = checkpoint.read(child.best_path)
    assert saved.train_config.tokenizer == "sp" and saved.tokenizer.to_dict() == pieces.to_dict()
    assert saved.lineage[0]["added"] == 0
    assert saved.tokenizer.decode(saved.tokenizer.encode(NEW).tolist()) == NEW  # byte fallback reads them
