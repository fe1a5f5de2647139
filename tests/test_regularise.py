"""The regularised recipe: weight drop, embedding drop, locked dropout, AR/TAR, the weight average, old checkpoints."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chargen import checkpoint
from chargen.config import ModelConfig, TrainConfig
from chargen.data import load_corpus
from chargen.model import CharLM
from chargen.training.trainer import Trainer

from .conftest import resumed_beside_whole

OLD = Path(__file__).parent / "data"  # a checkpoint written by chargen before the regularisers, and its text
REGULARISED = dict(dropout=0.3, locked=True, weight_drop=0.4, embed_drop=0.2)


def model(cell: str = "lstm", **regularisers) -> CharLM:
    torch.manual_seed(0)
    return CharLM(20, ModelConfig(cell=cell, layers=2, hidden=12, embed=6, **regularisers))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_without_dropout_the_layer_by_layer_path_is_the_fused_one(cell):
    fused, layered = model(cell, dropout=0.0), model(cell, dropout=0.0, locked=True)
    x = torch.randint(20, (3, 9))
    (a, sa), (b, sb) = fused.train()(x), layered.train()(x)
    assert torch.allclose(a, b, atol=1e-6) and all(torch.allclose(p, q, atol=1e-6) for p, q in zip(sa, sb))


def test_weight_drop_masks_change_between_batches_and_are_absent_in_eval():
    m = model(weight_drop=0.5, dropout=0.0)
    masks = []
    hook = lambda *args: masks.append(args[2][1].detach().clone())  # the weights each layer ran with
    from chargen import model as model_module

    original = model_module._LAYER_CALLS["lstm"]
    model_module._LAYER_CALLS["lstm"] = lambda x, s, w: (hook(x, s, w), original(x, s, w))[1]
    try:
        x = torch.randint(20, (2, 5))
        m.train()(x)
        m.train()(x)
    finally:
        model_module._LAYER_CALLS["lstm"] = original
    w_hh = m.rnn.weight_hh_l0.detach()
    first, second = masks[0], masks[2]  # layer 0 in each of two batches
    assert (first == 0).any() and not torch.equal(first, second)  # a fresh mask per batch
    kept = first != 0
    assert torch.allclose(first[kept], w_hh[kept] / 0.5)  # the rest rescaled
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x)[0], m(x)[0])  # evaluation uses the whole weights, the same every time
        assert torch.allclose(m(x)[0], model(dropout=0.0)(x)[0])


def test_a_locked_mask_is_the_same_at_every_step_of_a_window():
    """The gradient reaching the embedding output through a locked mask is zero at the same features in every step."""
    m = model(dropout=0.5, locked=True)
    seen = []

    def keep(module, inputs, out) -> None:
        out.retain_grad()
        seen.append(out)

    m.embed.register_forward_hook(keep)
    x = torch.randint(20, (4, 16))
    logits, _ = m.train()(x)
    logits.sum().backward()
    dropped = seen[0].grad == 0  # (B, T, E): where the input mask is zero
    assert dropped.any() and not dropped.all()
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same features at every step, per stream
    assert not torch.equal(dropped[0], dropped[1])  # and a mask of each stream's own


def test_embedding_drop_drops_whole_characters():
    m = model(embed_drop=0.5, dropout=0.0)
    seen = []
    m.rnn.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.tensor([[3, 3, 5, 3, 5, 7, 7, 3]])
    torch.manual_seed(3)
    m.train()
    for _ in range(10):  # some batch drops some character and keeps another
        seen.clear()
        m(x)
        zero = (seen[0][0] == 0).all(-1)  # (T,) rows that were dropped
        for c in (3, 5, 7):
            assert len(set(zero[x[0] == c].tolist())) == 1  # a character is dropped everywhere or nowhere
        if zero.any() and not zero.all():
            return
    pytest.fail("ten batches never dropped some characters and kept others")


@pytest.mark.parametrize("regularisers", [dict(dropout=0.3), REGULARISED])
def test_the_activations_penalised_are_the_last_layers_output_before_and_after_its_dropout(regularisers):
    m = model(**regularisers).train()
    torch.manual_seed(1)
    logits, _, (raw, dropped) = m(torch.randint(20, (3, 9)), activations=True)
    assert raw.shape == dropped.shape == (3, 9, 12)
    assert torch.allclose(logits, m.head(dropped))  # what the head read
    kept = dropped != 0
    assert torch.allclose(dropped[kept], raw[kept] / (1 - regularisers["dropout"]))  # the same values, dropped
    assert not kept.all()


def test_activation_penalties_make_the_last_layers_output_smaller_and_smoother(corpus_path, tmp_path):
    corpus, net = load_corpus(corpus_path, 0.1), ModelConfig(layers=1, hidden=16, embed=8, dropout=0.0)
    x = torch.tensor(corpus.val[:64], dtype=torch.long).view(2, 32)
    outputs = {}
    for ar in (0.0, 5.0):
        config = TrainConfig(batch_size=8, seq_len=32, steps=40, device="cpu", ar=ar, tar=ar, warmup=1)
        trainer = Trainer(corpus, net, config, tmp_path / str(ar))
        for _ in range(40):
            trainer.step()
        with torch.no_grad():
            _, _, (raw, _) = trainer.model.eval()(x, activations=True)
        outputs[ar] = (raw.pow(2).mean(), (raw[:, 1:] - raw[:, :-1]).pow(2).mean())
    assert outputs[5.0][0] < 0.5 * outputs[0.0][0] and outputs[5.0][1] < 0.5 * outputs[0.0][1]


def test_the_average_is_the_hand_computed_one_after_three_steps(corpus_path, tmp_path):
    corpus = load_corpus(corpus_path, 0.1)
    config = TrainConfig(batch_size=4, seq_len=16, steps=3, eval_every=100, device="cpu", average=0.9, warmup=1)
    trainer = Trainer(corpus, ModelConfig(layers=1, hidden=8, embed=4, dropout=0.0), config, tmp_path)
    expected = [p.detach().clone() for p in trainer.model.parameters()]
    for step in range(3):
        trainer.step()
        keep = min(0.9, (1 + step) / (10 + step))  # a shorter memory for the first steps: 0.1, 2/11, 3/12
        expected = [keep * e + (1 - keep) * p.detach() for e, p in zip(expected, trainer.model.parameters())]
    assert all(torch.allclose(a, e, atol=1e-7) for a, e in zip(trainer.average, expected))


def test_resume_is_bit_exact_with_every_regulariser_on(corpus_path, tmp_path):
    corpus = load_corpus(corpus_path, 0.1)
    net = ModelConfig(layers=2, hidden=16, embed=8, **REGULARISED)
    config = TrainConfig(
        batch_size=8, seq_len=32, steps=30, eval_every=10, device="cpu", warmup=3, average=0.95, ar=2.0, tar=1.0
    )
    whole, second = resumed_beside_whole(corpus, net, config, tmp_path, stop_at=13)
    for (name, p), q in zip(whole.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name
    assert all(torch.equal(a, b) for a, b in zip(whole.average, second.average))
    a, b = checkpoint.read(tmp_path / "a" / "best.pt"), checkpoint.read(tmp_path / "b" / "best.pt")
    assert a.averaged == b.averaged and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert a.other is not None  # both sets are kept, the better one as the weights


def test_best_holds_the_better_of_the_trained_and_averaged_weights(corpus_path, tmp_path):
    corpus = load_corpus(corpus_path, 0.1)
    config = TrainConfig(batch_size=8, seq_len=32, steps=60, eval_every=20, device="cpu", average=0.98)
    trainer = Trainer(corpus, ModelConfig(layers=1, hidden=16, embed=8, dropout=0.0), config, tmp_path)
    trainer.run()
    records = trainer.metrics
    assert all(r["val_loss"] == min(r["val_loss_trained"], r["val_loss_average"]) for r in records)
    best = checkpoint.read(tmp_path / "best.pt")
    scored = min(records, key=lambda r: r["val_loss"])
    assert best.averaged == (scored["val_loss_average"] < scored["val_loss_trained"])
    from chargen.generate import Generator
    from chargen.score import evaluate

    gen = Generator.load(tmp_path / "best.pt", "cpu")  # what sample and eval read: the better set of weights
    nats = evaluate(gen.model, corpus.val, gen.device) / trainer.val_scored_chars
    assert nats == pytest.approx(best.best_val, abs=1e-4)


def test_a_checkpoint_from_before_the_regularisers_loads_samples_and_resumes(tmp_path):
    shutil.copy(OLD / "before-regularisers.pt", tmp_path / "last.pt")
    shutil.copy(OLD / "before-regularisers.txt", tmp_path / "old.txt")
    saved = checkpoint.read(tmp_path / "last.pt")
    assert not saved.averaged and saved.other is None
    assert (saved.model_config.locked, saved.model_config.weight_drop, saved.model_config.embed_drop) == (False, 0, 0)
    chargen = [sys.executable, "-m", "chargen"]
    sample = subprocess.run([*chargen, "sample", "-c", str(tmp_path / "last.pt"), "-l", "40", "--seed", "1"],
                            capture_output=True, text=True)  # fmt: skip
    assert sample.returncode == 0 and len(sample.stdout) >= 40, sample.stderr
    resumed = subprocess.run(
        [*chargen, "train", "--resume", str(tmp_path / "last.pt"), str(tmp_path / "old.txt"), "--steps", "40"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    after = checkpoint.read(tmp_path / "last.pt")
    assert after.position.step == 40 and after.model_config == saved.model_config
