"""The conversation as a tree, on a real tiny model: retry, continue, best-of-N, branches, undo/redo, save/load."""

import pytest
import torch

import chargen
from chargen.chat import turns
from chargen.chat.conversation import Conversation
from chargen.config import SampleConfig
from chargen.errors import ChargenError
from chargen.writer import penalize, sample

from .test_repl import Recorder, drive


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return chargen.load(tiny_ckpt, "cpu")


def conversation(model, **settings) -> Conversation:
    return Conversation(model, SampleConfig(**{"length": 40, "stop": (), "seed": 7, **settings}))


def say(conv: Conversation, line: str) -> str:
    conv.feed(line)
    return "".join(conv.answer())


# -- sampling controls, by hand -------------------------------------------------------------------


def test_penalties_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    counts = torch.tensor([[1.0, 1.0, 0.0, 2.0]])
    out = penalize(logits, counts, repeat=2.0, presence=0.5, frequency=0.25)
    # seen and positive: divided; seen and negative: multiplied; then presence once and frequency per count
    want = [2 / 2 - 0.5 - 0.25, -1 * 2 - 0.5 - 0.25, 0.5, 3 / 2 - 0.5 - 0.5]
    assert torch.allclose(out, torch.tensor([want]))
    assert torch.equal(penalize(logits, counts), logits)  # the defaults change nothing


def test_min_p_keeps_exactly_the_tokens_it_should_in_their_proportions():
    probs = torch.tensor([0.5, 0.3, 0.12, 0.08])
    logits = probs.log().expand(20_000, -1)
    drawn = sample(logits, temperature=1.0, min_p=0.2, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(drawn, minlength=4).float() / len(drawn)
    kept = probs * (probs >= 0.2 * 0.5)  # 0.08 < 0.1: out; 0.12 stays
    assert share[3] == 0 and torch.allclose(share, kept / kept.sum(), atol=0.015)


def test_a_row_with_its_own_generator_draws_what_a_batch_of_one_draws():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(s) for s in (11, 22, 33)]
    together = [sample(logits, 1.0, generator=gens) for _ in range(5)]
    for b, seed in enumerate((11, 22, 33)):
        alone = torch.Generator().manual_seed(seed)
        assert [int(sample(logits[b : b + 1], 1.0, generator=[alone])) for _ in range(5)] == [
            int(t[b]) for t in together
        ]


def test_the_sampling_flags_reach_the_sampler(tiny_ckpt):
    from click.testing import CliRunner

    from chargen.cli import cli

    args = ["sample", "-c", str(tiny_ckpt), "-l", 200, "--seed", 3, "--device", "cpu", "--prime", "the"]
    plain = CliRunner().invoke(cli, list(map(str, args)))
    penalised = CliRunner().invoke(cli, list(map(str, [*args, "--repeat-penalty", 3, "--frequency-penalty", 1])))
    assert plain.exit_code == penalised.exit_code == 0 and plain.stdout != penalised.stdout
    bad = CliRunner().invoke(cli, list(map(str, [*args, "--presence-penalty", 5])))
    assert bad.exit_code == 2 and "--presence-penalty must be from -2 to 2" in bad.stderr


# -- the tree -------------------------------------------------------------------------------------


def test_retry_draws_afresh_and_replays_with_the_same_seed(model):
    conv = conversation(model)
    first = say(conv, "the king")
    again = "".join(conv.retry())
    assert again != first and conv.at == 2 and conv.tree[2].parent == conv.tree[1].parent == 0
    conv.set("seed", 7)  # the seed the first answer was drawn with, from the same state
    assert "".join(conv.retry()) == first
    assert conv.tree[1].answer == first  # the first answer is still there, on its branch


def test_continue_equals_the_unbroken_answer(model):
    for penalties in ({}, {"repeat_penalty": 1.4, "frequency_penalty": 0.3}):
        broken = conversation(model, length=25, **penalties)
        start = say(broken, "the queen")
        more = "".join(broken.more())
        unbroken = conversation(model, length=50, **penalties)
        assert start + more == say(unbroken, "the queen") and len(start + more) == 50


def test_a_branch_from_an_earlier_turn_leaves_the_old_one_whole(model):
    conv = conversation(model)
    say(conv, "the king")
    say(conv, "is dead")
    old_text = conv.text
    conv.goto(1)
    say(conv, "and the queen")
    assert conv.tree[1].children == [2, 3] and conv.text.startswith(conv.tree.text(1))
    assert "*3" in conv.tree.draw(conv.at) and " 2 " in conv.tree.draw(conv.at)
    conv.goto(2)
    assert conv.text == old_text
    assert [t.id for t in conv.tree.leaves()] == [2, 3]


def test_going_back_restores_the_state_and_draws_onward(model):
    conv = conversation(model)
    first = say(conv, "the king")
    say(conv, "and then something else entirely")
    assert conv.undo() and conv.undo() and not conv.undo() and conv.text == ""
    again = say(conv, "the king")
    assert again != first  # the random draw moved on: no branch reuses another's numbers
    conv.undo()
    conv.set("seed", 7)  # the seed of the first answer, from the restored state: the same answer
    assert say(conv, "the king") == first
    replay = conversation(model)  # the same seed and the same commands replay a session
    say(replay, "the king")
    say(replay, "and then something else entirely")
    replay.undo(), replay.undo()
    assert say(replay, "the king") == again


def test_undo_and_redo_of_any_depth(model):
    conv = conversation(model, length=5)
    for line in ("a", "b", "c"):
        say(conv, line)
    texts = [conv.tree.text(i) for i in range(4)]
    assert conv.undo() and conv.undo() and conv.undo() and conv.text == texts[0]
    assert conv.redo() and conv.text == texts[1] and conv.redo() and conv.redo() and conv.text == texts[3]
    assert not conv.redo()


def test_best_of_n_answer_k_is_a_single_draw_with_its_seed(model):
    conv = conversation(model)
    say(conv, "the king")
    answers = conv.best(3)
    assert len(answers) == 3 and len({text for _, text in answers}) > 1
    with pytest.raises(ChargenError, match="k must be from 1 to 3"):
        conv.pick(4)
    kept = conv.pick(2)
    assert kept.answer == answers[1][1] and conv.tree[kept.parent].children == [1, kept.id]
    with pytest.raises(ChargenError, match="nothing to pick from"):
        conv.pick(1)  # the candidates belong to the turn they were drawn at
    conv.goto(1)
    for seed, text in answers:
        conv.set("seed", seed)
        assert "".join(conv.retry()) == text


def test_a_picked_answer_goes_on_as_its_own_stream_would(model):
    conv = conversation(model, length=20)
    say(conv, "the king")
    seed, text = conv.best(2)[1]
    conv.pick(2)
    after_pick = say(conv, "and then")
    single = conversation(model, length=20, seed=7)
    single.feed("the king")
    single.set("seed", seed)
    assert "".join(single.answer()) == text
    assert say(single, "and then") == after_pick


def test_save_and_load_a_tree_of_three_branches_continues_exactly(model, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    conv = conversation(model, repeat_penalty=1.2)
    say(conv, "the king")
    "".join(conv.retry())
    conv.goto(1)
    say(conv, "the queen")
    conv.goto(0)
    say(conv, "a third way")
    assert len(conv.tree.leaves()) == 3
    conv.save("three")
    drawn, where = conv.tree.draw(conv.at), conv.at
    went_on = say(conv, "and on")
    loaded = Conversation(chargen.load(model.checkpoint.path, "cpu"))
    loaded.load("three")
    assert loaded.tree.draw(loaded.at) == drawn and loaded.at == where and loaded.config == conv.config
    assert say(loaded, "and on") == went_on
    loaded.goto(2)
    assert loaded.text == conv.tree.text(2)


def test_the_tree_keeps_at_most_max_turns_states(model, monkeypatch):
    monkeypatch.setattr(turns, "MAX_TURNS", 4)
    conv = conversation(model, length=3)
    say(conv, "a")
    "".join(conv.retry())  # turn 2, beside 1
    conv.goto(1)
    for line in "bcd":
        say(conv, line)  # turns 3, 4, 5 after 1: past 4 states the off-branch leaf 2 goes first,
    assert 2 not in conv.tree  # then, on one branch longer than the cap, the oldest state is freed
    assert conv.tree[1].freed and conv.tree[1].answer and conv.text.startswith(conv.tree.text(1))
    with pytest.raises(ChargenError, match="freed"):
        conv.goto(1)


# -- the loop ---------------------------------------------------------------------------------------


def test_every_tree_command_through_the_loop(model):
    conv = conversation(model)
    code, out, _ = drive(
        ["the king", "/retry", "/continue", "/best 2", "/pick 1", "/tree", "/branches", "/undo", "/redo", "/goto 1"]
        + ["/goto 99", "/pick 9", "/best x", "/goto", "/help"],
        conv,
    )
    notes = "\n".join(out.notes)
    assert code == 0 and len(out.bots) == 4  # the answer, the retry, the continuation, the picked one
    assert "2 candidates" in notes and "0 start" in notes and "turn 3:" in notes
    assert "back to turn 0" in notes and "forward to turn 3" in notes and "at turn 1" in notes
    assert "there is no turn 99" in notes
    assert "nothing to pick from" in notes and "takes a whole number, not 'x'" in notes
    assert "usage: /goto N" in notes and sum(line.startswith("/") for line in out.notes[-1].splitlines()) >= 15


def test_ctrl_c_keeps_the_answer_so_far_and_retry_redraws_it_whole(model):
    conv = conversation(model, length=200)
    pieces = []

    class Stops(Recorder):
        def bot(self, text):
            pieces.append(text)
            if len(pieces) == 10:
                raise KeyboardInterrupt
            super().bot(text)

    from chargen.chat.repl import Repl

    queue = ["the king", "/retry"]

    def read(prompt):
        if not queue:
            raise EOFError
        return queue.pop(0)

    out = Stops()
    Repl(conv, read, out).run()
    assert "kept as the turn" in out.notes[0] and len(conv.tree[1].answer) == 10
    assert len(conv.tree[2].answer) == 200 and conv.at == 2


def test_penalties_make_repeats_rarer(model):
    def repeats(text: str, span: int = 8) -> float:
        seen, hits = set(), 0
        for i in range(len(text) - span + 1):
            hits += text[i : i + span] in seen
            seen.add(text[i : i + span])
        return hits / max(1, len(text) - span + 1)

    greedy = "".join(model.generate("the king", length=400, temp=0.0))
    penalised = "".join(model.generate("the king", length=400, temp=0.0, repeat_penalty=1.5, frequency_penalty=0.5))
    assert repeats(greedy) > 0.5  # the greedy text loops: most of its 8-character spans came before
    assert repeats(penalised) < repeats(greedy) / 2  # the penalties break the loop: repeats are far rarer


def test_a_conversation_saved_before_trees_still_loads(model, tmp_path, monkeypatch):
    from chargen import checkpoint

    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    conv = conversation(model)
    say(conv, "the king")
    (tmp_path / "chats").mkdir()
    checkpoint.save(  # the layout of chat files before the tree
        {
            "kind": "chat",
            "model": conv._model_id(),
            "text": conv.text,
            "turns": 1,
            "state": list(conv.turn.after.state),
            "logits": conv.turn.after.logits,
            "config": {**conv.config.to_dict(), "stop": list(conv.config.stop)},
            "framing": conv.framing.__dict__,
        },
        tmp_path / "chats" / "old.pt",
    )
    old = conversation(model)
    old.load("old")
    assert old.text == conv.text and old.at == 0
    conv.set("seed", 1)
    old.set("seed", 1)
    assert say(old, "the queen") == say(conv, "the queen")


def test_the_tree_of_a_thousand_turns_is_drawn_one_turn_a_line(model):
    conv = conversation(model)
    for at in range(1200):  # one branch, deeper than Python's recursion limit (the turns' text, without a model)
        conv.tree.add(at, line="a", fed="a\n", answer="b")
    conv.tree.add(1100, line="c", fed="c\n", answer="d")  # a branch near the end
    conv.at = 1201
    _, out, _ = drive(["/tree", "/show"], conv)
    lines = out.notes[0].splitlines()
    assert len(lines) == len(conv.tree.turns) and "turn 1201" in out.notes[1]
    assert max(map(len, lines)) < 100  # a branch indents; a turn that follows the only one before it does not
    assert lines[-1].endswith("<- here") and "*1201" in lines[-1]


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: d["config"].update(stop="\n\n"), "stop is '\\n\\n', not a list of strings"),
        (lambda d: d["turns"][1].update(freed="no"), "turn 1's freed is 'no', not true or false"),
    ],
)
def test_a_hand_edited_saved_conversation_of_the_wrong_types_is_refused(model, tmp_path, monkeypatch, edit, says):
    from chargen import checkpoint

    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    conv = conversation(model)
    say(conv, "the king")
    path = conv.save("talk")
    data = torch.load(path, weights_only=True)
    edit(data)
    checkpoint.save({k: v for k, v in data.items() if k not in ("format", "format_version")}, path)
    fresh = conversation(model, length=12)
    with pytest.raises(ChargenError) as caught:
        fresh.load("talk")
    assert f"talk.pt is damaged ({says})" in str(caught.value) and "\n" not in str(caught.value)
    assert fresh.config.length == 12 and fresh.at == 0  # nothing changed
