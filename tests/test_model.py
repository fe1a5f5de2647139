import numpy as np
import pytest
import torch

from chargen.config import ModelConfig
from chargen.model import CharLM


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_two_half_windows_with_carried_state_equal_one_window(cell):
    torch.manual_seed(0)
    model = CharLM(20, ModelConfig(cell=cell, layers=2, hidden=16, embed=8, dropout=0.0)).eval()
    x = torch.randint(0, 20, (3, 24))
    full, full_state = model(x)
    first, state = model(x[:, :12])
    second, state = model(x[:, 12:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full)
    for a, b in zip(state, full_state):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_step_decode_matches_the_window(cell):
    torch.manual_seed(0)
    model = CharLM(20, ModelConfig(cell=cell, layers=2, hidden=16, embed=8, dropout=0.3)).eval()
    x = torch.randint(0, 20, (2, 10))
    full, _ = model(x)
    state = model.initial_state(2)
    for t in range(10):
        logits, state = model.step(x[:, t], state)
        torch.testing.assert_close(logits, full[:, t])
    for a, b in zip(state, model(x)[1]):
        torch.testing.assert_close(a, b)


def test_state_shapes():
    model = CharLM(10, ModelConfig(cell="lstm", layers=3, hidden=8, embed=4))
    h, c = model.initial_state(5)
    assert h.shape == c.shape == (3, 5, 8)
    (h,) = CharLM(10, ModelConfig(cell="gru", layers=3, hidden=8, embed=4)).initial_state(5)
    assert h.shape == (3, 5, 8)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_shapes_without_building_match_the_model(cell):
    config = ModelConfig(cell=cell, layers=3, hidden=12, embed=5)
    built = {k: tuple(v.shape) for k, v in CharLM(17, config).state_dict().items()}
    assert CharLM.shapes(17, config) == built


def test_a_new_model_first_guesses_the_unigram_of_its_ids():
    ids = np.array([0, 0, 0, 1, 2, 2], dtype=np.uint16)  # id 3 never occurs
    m = CharLM(4, ModelConfig(layers=1, hidden=8, embed=4))
    m.start_at_unigram(ids)
    expected = torch.tensor([4, 2, 3, 1]) / 10  # add-one smoothed counts over 6 + 4
    assert torch.allclose(m.head.bias.softmax(0), expected, atol=1e-6)
    with torch.no_grad():
        m.head.weight.zero_()  # with nothing read yet, the bias alone is the guess
    probs = m.eval()(torch.zeros(1, 3, dtype=torch.long))[0].softmax(-1)
    assert torch.allclose(probs, expected.expand(1, 3, 4), atol=1e-6)


def test_training_a_new_model_starts_at_the_unigram_and_a_resumed_one_keeps_its_weights(corpus_path, tmp_path):
    from chargen import checkpoint
    from chargen.config import TrainConfig
    from chargen.data import load_corpus
    from chargen.training.trainer import Trainer

    corpus = load_corpus(corpus_path, 0.1)
    net, config = ModelConfig(layers=1, hidden=8, embed=4), TrainConfig(device="cpu", steps=3, eval_every=3)
    trainer = Trainer(corpus, net, config, tmp_path / "a")
    counts = np.bincount(np.asarray(corpus.train), minlength=corpus.tokenizer.vocab_size) + 1.0
    assert np.allclose(trainer.model.head.bias.softmax(0).detach().numpy(), counts / counts.sum(), atol=1e-6)
    trainer.run()
    saved = checkpoint.read(tmp_path / "a" / "last.pt")
    again = Trainer(corpus, net, config, tmp_path / "b", start=saved.weights)
    assert torch.equal(again.model.head.bias, saved.weights["head.bias"])
