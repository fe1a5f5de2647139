"""Training on two processes with torchrun (gloo, CPU): the same model as one process, written by rank 0 alone."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from chargen import checkpoint

from .test_cli import run

SMALL = ["--hidden", 32, "--embed", 16, "--layers", 1, "--batch-size", 4, "--seq-len", 32, "--dropout", 0]
SMALL += ["--device", "cpu", "--eval-every", 10]


def torchrun_command(*args, processes=2, launcher=()):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return [*command, *launcher, "-m", "chargen", "train", *map(str, args)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CHARGEN_DIST_TIMEOUT": "60"}


def torchrun(*args, processes=2):
    return subprocess.run(
        torchrun_command(*args, processes=processes), capture_output=True, text=True, env=ENV, timeout=300
    )


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


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker of `rank` that the torchrun process `launcher` started, read from /proc."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_a_killed_rank_leaves_the_other_one_clear_line_and_its_checkpoints_whole(corpus_path, tmp_path):
    out = tmp_path / "run"
    command = torchrun_command(corpus_path, "-o", out, "--steps", 100_000, *SMALL, launcher=["--monitor-interval", "3"])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        victim = rank_pid(proc.pid, 1)
        assert victim is not None and (out / "last.pt").exists()
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "internal error" not in stderr
    said = "another process of this torchrun run stopped (killed, or failed: its own lines say why), so this one stops"
    assert f"{said} too; the checkpoints in {out} are whole" in stderr
    assert checkpoint.read(out / "last.pt").position.step > 0  # whole, and a resume can start from it
