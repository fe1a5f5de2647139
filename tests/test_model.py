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
