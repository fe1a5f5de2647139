"""Training on two processes with torchrun (gloo, CPU): the same model as one process, written by rank 0 alone."""

import os
import subprocess
import sys

import pytest
import torch

from chargen import checkpoint

from .test_cli import run

SMALL = ["--hidden", 32, "--embed", 16, "--layers", 1, "--batch-size", 4, "--seq-len", 32, "--dropout", 0]
SMALL += ["--device", "cpu", "--eval-every", 10]


def torchrun(*args, processes=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command += ["-m", "chargen", "train", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CHARGEN_DIST_TIMEOUT": "60"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def runs(corpus_path, tmp_path_factory):
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    done = torchrun(corpus_path, "-o", two / "run", "--steps", 20, *SMALL)
    assert done.returncode == 0, done.stderr
    assert run("train", corpus_path, "-o", one / "run", "--steps", 20, *SMALL).exit_code == 0
    return two / "run", one / "run", done


def test_two_processes_train_the_model_one_process_trains(runs):
    two, one, _ = runs
    a, b = checkpoint.read(two / "last.pt"), checkpoint.read(one / "last.pt")
    for name, weight in a.weights.items():
        assert torch.allclose(weight, b.weights[name], atol=1e-6), name
    assert a.best_val == pytest.approx(b.best_val, abs=1e-6)  # validation shared out and summed exactly
    assert a.batch_size == 4 and all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.state, b.state))
    assert not torch.allclose(a.state[0][:, :2], a.state[0][:, 2:])  # each rank carried streams of its own


def test_only_rank_zero_writes_and_talks(runs):
    two, _, done = runs
    assert sorted(p.name for p in two.iterdir()) == [".lock", "best.pt", "last.pt", "metrics.jsonl"]
    assert done.stderr.count("best val") == 1 and done.stderr.count("training a 1x32 LSTM") == 1
    assert done.stderr.count("torchrun: training on 2 processes (gloo backend)") == 1


def test_a_run_of_two_processes_resumes_on_one(runs, corpus_path):
    two, one, _ = runs
    for folder in (two, one):
        assert run("train", "--resume", folder / "last.pt", "--steps", 30, "--device", "cpu").exit_code == 0
    a, b = checkpoint.read(two / "last.pt"), checkpoint.read(one / "last.pt")
    assert a.position.step == b.position.step == 30
    assert all(torch.allclose(w, b.weights[k], atol=1e-5) for k, w in a.weights.items())


def test_a_batch_that_does_not_split_is_one_clear_line(corpus_path, tmp_path):
    done = torchrun(
        corpus_path, "-o", tmp_path / "run", "--steps", 2, *SMALL[:-6], "--batch-size", 3, "--device", "cpu"
    )
    assert done.returncode != 0 and "does not split over 2 processes" in done.stderr
