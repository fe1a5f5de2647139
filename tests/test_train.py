import json
import math

import pytest
import torch

from chargen import checkpoint
from chargen.data import load_corpus
from chargen.training.trainer import Reporter, Trainer

from .conftest import resumed_beside_whole, tiny_configs, train_tiny


def test_loss_falls(corpus_path, tmp_path):
    trainer, result = train_tiny(corpus_path, tmp_path, steps=120, eval_every=40)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [40, 80, 120]
    assert lines[-1]["val_loss"] < lines[0]["val_loss"] - 0.3
    assert lines[-1]["val_loss"] < math.log(trainer.corpus.tokenizer.vocab_size) - 1
    for key in ("step", "epoch", "train_loss", "val_loss", "val_bpc", "lr", "chars_per_sec", "elapsed_s"):
        assert key in lines[-1]
    assert math.isclose(lines[-1]["val_bpc"], lines[-1]["val_loss"] / math.log(2), rel_tol=1e-4)
    assert result.best_val == pytest.approx(min(r["val_loss"] for r in lines), abs=1e-5)


def test_resume_gives_the_weights_of_an_unbroken_run(corpus_path, tmp_path):
    # The run evaluates (and saves) at step 30; a second process would load that checkpoint.
    train_tiny(corpus_path, tmp_path / "whole", steps=60, eval_every=30)
    train_tiny(corpus_path, tmp_path / "broken", steps=60, eval_every=30, stop_at=30)
    saved = checkpoint.read(tmp_path / "broken" / "last.pt")
    assert saved.position.step == 30
    train_tiny(corpus_path, tmp_path / "broken", steps=60, eval_every=30, resume=saved)
    a = checkpoint.read(tmp_path / "whole" / "last.pt").weights
    b = checkpoint.read(tmp_path / "broken" / "last.pt").weights
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_is_exact_with_dropout_and_across_epochs(corpus_path, tmp_path):
    from chargen.config import ModelConfig, TrainConfig

    corpus = load_corpus(corpus_path, 0.1)
    model = ModelConfig(layers=2, hidden=16, embed=8, dropout=0.3)
    config = TrainConfig(batch_size=8, seq_len=64, steps=40, eval_every=100, device="cpu", warmup=3)
    whole, second = resumed_beside_whole(corpus, model, config, tmp_path, stop_at=17)
    assert whole.batcher.windows < 40  # the run crosses an epoch boundary
    for (name, p), q in zip(whole.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name


def test_ctrl_c_saves_last_and_returns(corpus_path, tmp_path):
    class Interrupts(Reporter):
        def step(self, trainer):
            if trainer.position.step == 7:
                raise KeyboardInterrupt

    model, config = tiny_configs(steps=50)
    trainer = Trainer(load_corpus(corpus_path, 0.1), model, config, tmp_path, reporter=Interrupts())
    result = trainer.run()
    assert result.interrupted and result.step == 7
    assert checkpoint.read(tmp_path / "last.pt").position.step == 7


class FakeClock:
    """Time that advances by `tick` seconds each time it is read: a time budget without a race."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.parametrize("tick", [0.01, 0.3])  # many steps in the budget, and fewer than the warm-up
def test_a_time_budget_ends_annealed(corpus_path, tmp_path, monkeypatch, tick):
    model, config = tiny_configs(steps=None, time=2.0, eval_every=10_000, warmup=5)
    trainer = Trainer(load_corpus(corpus_path, 0.1), model, config, tmp_path)
    monkeypatch.setattr(trainer, "clock", FakeClock(tick))
    result = trainer.run()
    assert trainer.position.elapsed >= 2.0 and trainer.progress() == 1.0
    warm = min(1.0, (result.step + 1) / config.warmup)  # a budget spent within the warm-up ends part-way up it
    assert math.isclose(trainer.lr(), config.lr * config.min_lr_frac * warm, rel_tol=1e-6)
    if tick == 0.01:
        assert result.step > config.warmup


def test_patience_stops_a_run_that_no_longer_improves(corpus_path, tmp_path):
    trainer, result = train_tiny(corpus_path, tmp_path, steps=10_000, eval_every=1, patience=2, lr=0.5, warmup=0)
    assert result.stopped_early and result.step < 10_000
    assert trainer.position.bad_evals == 2


def test_chargen_train_from_python_builds_the_tokenizer_it_is_asked_for(corpus_path, tmp_path):
    import chargen
    from chargen.errors import SettingError

    small = dict(hidden=8, embed=4, layers=1, batch_size=4, seq_len=16, steps=2, eval_every=2, device="cpu")
    result = chargen.train(corpus_path, out=tmp_path / "sp", tokenizer="sp", vocab_size=300, **small)
    saved = checkpoint.read(result.best_path)
    assert saved.tokenizer.kind == "sp" and saved.train_config.tokenizer == "sp" and saved.vocab_size == 300
    model, config = tiny_configs(tokenizer="sp")
    with pytest.raises(SettingError, match="tokenizer is 'sp' but the corpus was encoded with 'char'"):
        Trainer(load_corpus(corpus_path, 0.1), model, config, tmp_path / "x")  # a char corpus: refused, not mislabelled


def test_a_run_evaluates_often_enough_to_keep_its_best_whatever_its_length(corpus_path, tmp_path, monkeypatch):
    """With no --eval-every, a run of 600 steps evaluates about every twentieth of it (each evaluation here costs
    one tick of the clock, each step one: cheap enough), not only at 250, 500 and the end; a run given
    --eval-every keeps exactly that cadence."""
    monkeypatch.setattr(Trainer, "clock", staticmethod(FakeClock(1.0)))
    model, config = tiny_configs(steps=600, eval_every=None)
    trainer = Trainer(load_corpus(corpus_path, 0.1), model, config, tmp_path / "auto")
    trainer.run()
    steps = [r["step"] for r in trainer.metrics]
    assert len(steps) >= 15 and steps[-1] == 600 and steps == sorted(set(steps)), steps
    _, result = train_tiny(corpus_path, tmp_path / "given", steps=300, eval_every=100)
    given = [json.loads(line)["step"] for line in (tmp_path / "given" / "metrics.jsonl").read_text().splitlines()]
    assert given == [100, 200, 300]
