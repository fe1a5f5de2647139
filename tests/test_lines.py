"""Line mode: one example per line, a random split of whole lines, whole-line samples marked new or copied."""

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import chargen
from chargen import checkpoint
from chargen.config import SampleConfig
from chargen.data import load_corpus
from chargen.lines import boundary, evaluate_lines, examples, joined, split
from chargen.model import CharLM
from chargen.training.batchers import LineBatcher

from .test_cli import one_clear_line, run

SYLLABLES = "ka ri to mi sa lo ne ha ru vi el an".split()


def make_names(n: int = 1500, seed: int = 0) -> list[str]:
    """Made-up names of 2 to 3 syllables, sorted (as lists often are), duplicates dropped."""
    rng = random.Random(seed)
    return sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize() for _ in range(n)})


@pytest.fixture(scope="module")
def names_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("lines") / "names.txt"
    path.write_text("".join(f"  {name}\r\n" if i % 7 == 0 else f"{name}\n\n" for i, name in enumerate(make_names())))
    return path


@pytest.fixture(scope="module")
def names_ckpt(names_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("names-run")
    args = ["train", names_path, "--lines", "-o", out, "--steps", 60, "--eval-every", 30, "--hidden", 48]
    result = run(*args, "--embed", 16, "--layers", 1, "--batch-size", 4, "--seq-len", 32, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "validation lines (a random 0.1), each from a carry state" in result.stderr
    return out / "best.pt"


def test_examples_are_stripped_non_empty_lines():
    assert examples(iter(["  Ann \n\nBo", "b\n\t\nCy"])) == ["Ann", "Bob", "Cy"]
    assert joined(["Ann", "Bob"]) == "\nAnn\nBob\n"


def test_validation_is_a_random_tenth_of_the_lines_the_same_every_time():
    names = make_names()
    train, val = split(names, 0.1)
    assert (train, val) == split(names, 0.1)
    assert sorted(train + val) == names and len(val) == len(names) // 10
    assert val != names[-len(val) :]  # not the tail of a sorted list
    assert min(names.index(v) for v in val) < len(names) // 4  # drawn from all over it


def test_a_batch_is_whole_lines_from_a_fresh_state():
    ids = np.array([9, 1, 2, 9, 3, 9, 4, 5, 6, 9])  # 9 is the boundary: lines [1 2], [3], [4 5 6]
    batcher = LineBatcher(ids, 9, batch_size=3, seq_len=3, device="cpu", seed=0)
    assert batcher.batch_size == 3 and batcher.windows == 1
    x, y = batcher.window(0, 0)
    rows = sorted(zip(x.tolist(), y.tolist()))
    assert rows == [
        ([9, 1, 2, 9], [1, 2, 9, -100]),
        ([9, 3, 9, 9], [3, 9, -100, -100]),
        ([9, 4, 5, 6], [4, 5, 6, 9]),
    ]
    assert batcher.last_tokens == 3 + 2 + 4  # the padding is not counted


def test_an_epoch_reads_each_line_once_in_batches_of_like_length():
    from chargen.tokenizer import CharTokenizer

    text = joined(make_names())
    tok = CharTokenizer.fit([text])
    batcher = LineBatcher(tok.encode(text), boundary(tok), batch_size=4, seq_len=32, device="cpu")
    epoch = batcher.batches(0)
    assert epoch.shape == (batcher.windows, batcher.batch_size) and len(set(epoch.flat)) == epoch.size
    assert (epoch == batcher.batches(0)).all() and not (epoch == batcher.batches(1)).all()
    lengths = batcher.ends - batcher.at
    spread = np.mean([lengths[rows].max() - lengths[rows].min() for rows in epoch])
    assert spread < 0.5 * (lengths.max() - lengths.min())  # a batch is mostly lines of one length


def test_evaluation_scores_each_line_alone(names_ckpt):
    saved = checkpoint.read(names_ckpt)
    model = CharLM(saved.vocab_size, saved.model_config)
    model.load_state_dict(saved.weights)
    model.eval().requires_grad_(False)
    lines = ["Kari", "Tomisa", "Elvi"]
    ids = saved.tokenizer.encode(joined(lines))
    at = boundary(saved.tokenizer)
    want = 0.0
    for line in lines:  # each line on its own, from a fresh state: the boundary, the line, its end
        one = torch.tensor(saved.tokenizer.encode("\n" + line + "\n"), dtype=torch.long)[None]
        logits, _ = model(one[:, :-1])
        want += float(F.cross_entropy(logits[0], one[0, 1:], reduction="sum").detach())
    assert evaluate_lines(model, ids, at, torch.device("cpu"), batch=2) == pytest.approx(want, rel=1e-5)


def test_train_sample_mark_eval_info(names_ckpt, names_path):
    info = run("info", names_ckpt)
    assert "line mode" in info.stdout and "carry state" in info.stdout
    assert run("info", names_ckpt, "--json").stdout.count('"state": "carry"') == 1

    sampled = run("sample", "-c", names_ckpt, "-n", 20, "--seed", 1, "--mark")
    assert sampled.exit_code == 0, sampled.stderr
    rows = sampled.stdout.splitlines()
    assert len(rows) == 20 and all(r.split("\t")[0] in ("new", "in train", "in val") for r in rows)
    assert "20 lines:" in sampled.stderr
    plain = run("sample", "-c", names_ckpt, "-n", 20, "--seed", 1)
    assert plain.stdout.splitlines() == [r.split("\t", 1)[1] for r in rows]  # the same draw, unmarked
    new = run("sample", "-c", names_ckpt, "-n", 20, "--seed", 1, "--new-only")
    assert new.stdout.splitlines() == [r.split("\t", 1)[1] for r in rows if r.startswith("new\t")]
    primed = run("sample", "-c", names_ckpt, "-n", 5, "--seed", 2, "--prime", "Ka")
    assert all(line.startswith("Ka") for line in primed.stdout.splitlines()) and len(primed.stdout.splitlines()) == 5

    scored = run("eval", "-c", names_ckpt, names_path)
    assert scored.exit_code == 0 and "nats/char" in scored.stdout


def test_marks_tell_training_lines_from_validation_lines_and_new_ones(names_ckpt, names_path):
    saved = checkpoint.read(names_ckpt)
    train, val = split(examples(iter([names_path.read_text()])), 0.1)
    assert saved.lines.mark(train[0]) == "in train" and saved.lines.mark(val[0]) == "in val"
    assert saved.lines.mark("Zzyzx") == "new"


def test_the_python_api_writes_lines(names_ckpt):
    model = chargen.load(names_ckpt, "cpu")
    lines = model.sample_lines(SampleConfig(seed=3), "Ri", n=4)
    assert len(lines) == 4 and all(line.startswith("Ri") and "\n" not in line for line in lines)


def test_a_fresh_state_for_each_line_trains_samples_and_scores(names_path, tmp_path):
    corpus = load_corpus(names_path, 0.1, lines=True)
    assert corpus.val.tolist()[0] == corpus.tokenizer.encode("\n")[0]  # the first line starts at a boundary
    small = dict(layers=1, hidden=32, embed=16, batch_size=4, seq_len=32, steps=20, eval_every=10, device="cpu")
    result = chargen.train(names_path, out=tmp_path / "reset", lines=True, line_state="reset", **small)
    assert run("info", result.best_path, "--json").stdout.count('"state": "reset"') == 1
    model = chargen.load(result.best_path, "cpu")
    score = run("eval", "-c", result.best_path, names_path, "--json").stdout
    val = [line + "\n" for line in split(examples(iter([names_path.read_text()])), 0.1)[1]]
    (tmp_path / "val.txt").write_text("".join(val))
    scored = json.loads(run("eval", "-c", result.best_path, tmp_path / "val.txt", "--json").stdout)
    assert scored["nats_per_char"] == pytest.approx(result.best_val, abs=1e-5)  # eval of the held-out lines
    assert json.loads(score)["chars"] > scored["chars"]
    assert len(model.sample_lines(SampleConfig(seed=1), n=3)) == 3


def test_line_mode_refusals(names_ckpt, tiny_ckpt, names_path):
    one_clear_line(run("sample", "-c", tiny_ckpt, "--mark"), "--mark", "line-mode")
    one_clear_line(run("train", names_path, "--lines", "--tokenizer", "sp"), "--lines", "characters")
    one_clear_line(run("sample", "-c", names_ckpt, "--prime", "a\\nb"), "line break")


def test_chat_answers_one_line_per_turn(names_ckpt):
    from .test_repl import chat

    result = chat(names_ckpt, "--seed", "1", stdin="Kari\nTomisa\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("\nKari\n")  # the first line after a line boundary, as in training
    lines = result.stdout.splitlines()[1:]
    assert lines[0] == "Kari" and lines[2] == "Tomisa" and len(lines) == 4  # each answer is one line
