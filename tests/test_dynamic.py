"""Dynamic evaluation: a model that learns as it reads, scoring each character before any step that saw it."""

import copy
import json
import random

import pytest
import torch

import chargen
from chargen.chat.conversation import Conversation
from chargen.config import LearnConfig, SampleConfig
from chargen.dynamic import Learner
from chargen.score import evaluate, score_file, scored_chars

from .test_cli import one_clear_line, run


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return chargen.load(tiny_ckpt, "cpu")


def scores_of(model, text: str, **settings) -> list[float]:
    scores: list[float] = []
    Learner(copy.deepcopy(model.model), LearnConfig(**settings)).read(model.tokenizer.encode(text), scores=scores)
    return scores


def test_no_score_depends_on_a_step_that_saw_its_character(model):
    text = "the king is dead, long live the queen. " * 20
    changed = text[:-1] + "q"
    for window in (1, 7, 64):
        a, b = scores_of(model, text, learn_window=window), scores_of(model, changed, learn_window=window)
        assert len(a) == len(b) == len(text) - 1
        assert a[:-1] == b[:-1] and a[-1] != b[-1]  # every earlier score identical, to the bit


def test_learning_makes_what_the_text_repeats_likely(model, tmp_path):
    rng = random.Random(0)
    line = "".join(rng.choice("the king queen dead") for _ in range(60)) + "\n"  # a line the model never saw
    path = tmp_path / "repeats.txt"
    path.write_text(line * 40)
    static = score_file(model, path)
    dynamic = score_file(model, path, LearnConfig(learn_rate=3e-3))
    assert dynamic.nats_per_char < static.nats_per_char - 0.5 and dynamic.dynamic is not None


def test_the_model_and_the_static_figure_do_not_change(model, tiny_ckpt, corpus_path):
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    blob = tiny_ckpt.read_bytes()
    score_file(model, corpus_path, LearnConfig())
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert tiny_ckpt.read_bytes() == blob
    static = json.loads(run("eval", "-c", tiny_ckpt, corpus_path, "--json", "--device", "cpu").stdout)
    ids = model.tokenizer.encode(corpus_path.read_text())
    chars = len(corpus_path.read_text())
    want = evaluate(model.model, ids, model.device) / scored_chars(model.tokenizer, ids, chars)
    assert static["nats_per_char"] == round(want, 6) and static["dynamic"] is None


def test_eval_dynamic_from_the_cli(tiny_ckpt, corpus_path):
    done = run("eval", "-c", tiny_ckpt, corpus_path, "--dynamic", "--learn-rate", 0.001, "--device", "cpu")
    assert done.exit_code == 0 and "dynamic: learn rate 0.001, window 64, decay 0.001" in done.stdout
    data = json.loads(run("eval", "-c", tiny_ckpt, corpus_path, "--dynamic", "--json").stdout)
    assert data["dynamic"] == LearnConfig().to_dict()
    one_clear_line(run("eval", "-c", tiny_ckpt, corpus_path, "--dynamic", "--learn-rate", 0), "--learn-rate must be")


@pytest.mark.parametrize("command, switch", [("eval", "--dynamic"), ("sample", "--learn"), ("chat", "--learn")])
def test_a_learning_flag_without_learning_is_refused(tiny_ckpt, corpus_path, command, switch):
    args = [command, "-c", tiny_ckpt, "--learn-window", 16, *([corpus_path] if command == "eval" else [])]
    done = run(*args)
    assert done.exit_code == 2 and not done.stdout
    one_clear_line(done, f"--learn-window takes effect only with {switch}")


def test_sample_learns_from_its_prime(tiny_ckpt, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("castle lamp " * 60)  # words of its text, in a run it never saw
    args = ["sample", "-c", tiny_ckpt, "--prime-file", prime, "-l", 60, "--seed", 1, "--device", "cpu", "-t", 0.5]
    plain, learnt = run(*args), run(*args, "--learn", "--learn-rate", 0.01)
    assert plain.exit_code == learnt.exit_code == 0 and plain.stdout != learnt.stdout
    tail = learnt.stdout[len(prime.read_text()) :]
    assert tail.count("castle lamp") >= 2 and "castle lamp" not in plain.stdout[len(prime.read_text()) :]
    one_clear_line(run(*args, "--learn", "--bf16"), "--learn", "--bf16")


def test_chat_learns_and_saves_what_it_learnt(model, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    trained = copy.deepcopy(model.model.state_dict())
    gen = chargen.load(model.checkpoint.path, "cpu")
    conv = Conversation(gen, SampleConfig(length=30, stop=(), seed=4), learner=Learner(gen.model))
    for line in ("castle lamp", "castle lamp castle", "lamp"):
        conv.feed(line)
        "".join(conv.answer())
    conv.feed("castle")  # the turns before are learnt when the conversation moves past them
    assert conv.learnt == [1, 2, 3] and any(not torch.equal(trained[k], v) for k, v in gen.model.state_dict().items())
    conv.save("learning")
    went_on = "".join(conv.answer())
    other = chargen.load(model.checkpoint.path, "cpu")
    loaded = Conversation(other, learner=Learner(other.model))
    loaded.load("learning")
    assert "".join(loaded.answer()) == went_on
    assert all(torch.equal(a, b) for a, b in zip(gen.model.state_dict().values(), other.model.state_dict().values()))


def test_going_back_replays_learning_exactly(model):
    gen = chargen.load(model.checkpoint.path, "cpu")
    conv = Conversation(gen, SampleConfig(length=20, stop=(), seed=2), learner=Learner(gen.model))
    for line in ("the king", "the queen", "the prince"):
        conv.feed(line)
        "".join(conv.answer())
    conv.feed("and")
    after_three = {k: v.clone() for k, v in gen.model.state_dict().items()}
    conv.goto(2)  # back: the next step needs the weights that learnt turns 1 and 2 only
    conv.feed("or")
    assert conv.learnt == [1, 2]
    conv.goto(4)
    conv.feed("then")  # forward again: the same weights as before, replayed from the trained ones
    assert conv.learnt == [1, 2, 3, 4]
    conv.undo()
    conv.undo()  # from turn 6 back to 4, then to 3, whose weights learnt turns 1-3
    conv.feed("again")
    assert conv.learnt == [1, 2, 3]
    assert all(torch.equal(after_three[k], v) for k, v in gen.model.state_dict().items())  # replayed exactly


def test_a_chat_saved_learning_goes_on_learning_when_loaded_without_learn(model, tmp_path, monkeypatch):
    from .test_repl import drive

    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    gen = chargen.load(model.checkpoint.path, "cpu")
    learning = LearnConfig(learn_rate=0.01, learn_window=16)
    conv = Conversation(gen, SampleConfig(length=30, stop=(), seed=4), learner=Learner(gen.model, learning))
    for line in ("castle lamp", "lamp castle", "castle"):
        conv.feed(line)
        "".join(conv.answer())
    conv.save("learning")
    conv.feed("lamp")  # learns from turn 3 first, with the session's settings
    went_on = "".join(conv.answer())
    other = chargen.load(model.checkpoint.path, "cpu")
    loaded = Conversation(other)  # chargen chat without --learn
    _, out, _ = drive(["/load learning", "lamp"], loaded)
    assert "saved with --learn" in out.notes[1] and "learn rate 0.01, window 16" in out.notes[1]
    assert loaded.learner.config == learning and out.bots == [went_on]
    assert all(torch.equal(a, b) for a, b in zip(gen.model.state_dict().values(), other.model.state_dict().values()))
