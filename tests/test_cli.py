"""The CLI as a person meets it: real commands, and every bad input ending in one clear line."""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from chargen import checkpoint
from chargen.cli import cli

from .conftest import make_text


def run(*args, cwd=None):
    """chargen ARGS through Click's runner, with stdout and stderr apart."""
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        return CliRunner().invoke(cli, [str(a) for a in args], prog_name="chargen", catch_exceptions=False)
    finally:
        os.chdir(old)


def one_clear_line(result, *words):
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any(all(w.lower() in line.lower() for w in words) for line in lines), result.stderr
    return result.stderr


@pytest.mark.parametrize("args", [["--help"], ["sample", "--temp", "-1"]])
def test_help_and_bad_flags_import_no_torch(args):
    code = (
        f"import sys; from chargen.cli import main; sys.argv=['chargen', *{args!r}]\n"
        "try: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_every_command_has_help():
    assert {"train", "sample", "eval", "info", "chat"} <= set(cli.commands)
    for command in cli.commands:
        assert "Usage: chargen " + command in run(command, "--help").output


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "chargen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_train_sample_eval_info_end_to_end(tmp_path, corpus_path):
    out = tmp_path / "run"
    args = ["train", corpus_path, "-o", out, "--steps", 40, "--eval-every", 20, "--hidden", 32, "--embed", 16]
    result = run(*args, "--layers", 1, "--batch-size", 4, "--seq-len", 32, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # nothing but generated text ever goes to stdout
    assert "best val" in result.stderr and f"chargen sample -c {out / 'best.pt'}" in result.stderr
    assert {"best.pt", "last.pt", "metrics.jsonl"} <= set(os.listdir(out))
    best_step = checkpoint.read(out / "best.pt").position.step  # the final line names it, not only the last step
    assert f"at step {best_step} of 40" in result.stderr

    sample = run("sample", "-c", out / "best.pt", "--prime", "ROMEO:", "-l", 50, "--seed", 3)
    assert sample.exit_code == 0 and sample.stdout.startswith("ROMEO:") and len(sample.stdout) == 6 + 50 + 1
    again = run("sample", "-c", out / "best.pt", "--prime", "ROMEO:", "-l", 50, "--seed", 3)
    assert again.stdout == sample.stdout
    many = run("sample", "-c", out / "best.pt", "-n", 3, "-l", 20, "--seed", 1)
    assert many.stdout.count("--- sample ") == 3

    scored = run("eval", "-c", out / "best.pt", corpus_path, "--json")
    data = json.loads(scored.stdout)
    assert set(data) == {"nats_per_char", "bits_per_char", "chars", "dynamic", "trained_share"}
    assert data["dynamic"] is None and data["trained_share"] >= 0.8  # it is the corpus the model read
    assert data["chars"] == len(corpus_path.read_text())
    assert abs(data["bits_per_char"] * 0.6931471805599453 - data["nats_per_char"]) < 1e-5

    info = json.loads(run("info", out / "best.pt", "--json").stdout)
    assert info["step"] == 40 and info["tokenizer"]["kind"] == "char" and info["parameters"] > 0
    assert "best val" in run("info", out / "best.pt").stdout


def test_sample_finds_the_newest_checkpoint(tmp_path, tiny_ckpt):
    (tmp_path / "checkpoints" / "x").mkdir(parents=True)
    (tmp_path / "checkpoints" / "x" / "best.pt").write_bytes(tiny_ckpt.read_bytes())
    result = run("sample", "-l", 10, "--seed", 1, cwd=tmp_path)
    assert result.exit_code == 0 and "checkpoints/x/best.pt" in result.stderr and len(result.stdout) == 11


def test_sample_in_bf16(tiny_ckpt):
    args = ("sample", "-c", tiny_ckpt, "--bf16", "-n", 3, "-l", 20, "--seed", 1, "--prime", "the")
    first = run(*args)
    assert first.exit_code == 0 and first.stdout.count("--- sample") == 3
    assert run(*args).stdout == first.stdout


def test_unknown_prime_characters_are_named(tiny_ckpt):
    result = run("sample", "-c", tiny_ckpt, "--prime", "the 王 king", "-l", 5)
    assert result.exit_code == 0 and "'王'" in result.stderr and result.stdout.startswith("the 王 king")


def test_resume_from_the_cli(tmp_path, corpus_path):
    out = tmp_path / "r"
    common = ["--hidden", 16, "--embed", 8, "--layers", 1, "--batch-size", 4, "--seq-len", 16, "--eval-every", 10]
    assert run("train", corpus_path, "-o", out, "--steps", 10, "--seed", 3, *common).exit_code == 0
    result = run("train", "--resume", out / "last.pt", "--steps", 20)
    assert result.exit_code == 0, result.stderr
    assert json.loads(run("info", out / "last.pt", "--json").stdout)["step"] == 20
    # The same command again with --resume added: flags equal to the run's own are accepted.
    same = run("train", corpus_path, "-o", out, "--steps", 30, "--seed", 3, *common, "--resume", out / "last.pt")
    assert same.exit_code == 0, same.stderr
    assert json.loads(run("info", out / "last.pt", "--json").stdout)["step"] == 30
    bad = run("train", "--resume", out / "last.pt", "--hidden", 64)
    one_clear_line(bad, "--hidden was 16 in this run, not 64; drop it, or start a new run")
    seed = run("train", "--resume", out / "last.pt", "--seed", 4, "--steps", 40)
    one_clear_line(seed, "--seed was 3 in this run, not 4")


# -- bad input: one line that says what is wrong and what to do, a non-zero exit, no traceback --


@pytest.fixture()
def files(tmp_path, tiny_ckpt):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nofolder").mkdir()
    (tmp_path / "nofolder" / "x.bin").write_bytes(b"\0\1")
    (tmp_path / "bin.dat").write_bytes(b"\x7fELF\0\0\0binary")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\nok\n")
    (tmp_path / "short.txt").write_text("tiny text")
    (tmp_path / "ok.txt").write_text(make_text(200))
    blob = tiny_ckpt.read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 3])
    flipped = bytearray(blob)
    flipped[len(blob) // 2 : len(blob) // 2 + 16] = b"\xff" * 16
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    raw = torch.load(tiny_ckpt, weights_only=True)
    raw["format_version"] = 42
    torch.save(raw, tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint at all")
    (tmp_path / "afile").write_text("x")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    torch.save({"format": "chargen-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    return tmp_path


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "{d}/missing.txt"], ["does not exist"]),
        (["train", "{d}/nofolder"], ["no text files"]),
        (["train", "{d}/empty.txt"], ["empty"]),
        (["train", "{d}/bin.dat"], ["binary"]),
        (["train", "{d}/latin1.txt"], ["not valid utf-8", "offset 3", "line 1"]),
        (["train", "{d}/short.txt"], ["only 9 characters"]),
        (["train", "{d}/ok.txt", "--seq-len", "5000"], ["too few", "--seq-len"]),
        (["train", "{d}/ok.txt", "--time", "soon"], ["--time", "90s"]),
        (["train", "{d}/ok.txt", "--hidden", "0"], ["--hidden"]),
        (["train", "{d}/ok.txt", "-o", "{d}/afile/sub"], ["cannot write", "--out"]),
        (["sample", "-c", "{ckpt}", "--temp", "-1"], ["--temp"]),
        (["sample", "-c", "{ckpt}", "--temp", "hot"], ["temp", "not a valid float"]),
        (["sample", "-c", "{ckpt}", "--top-k", "0"], ["--top-k"]),
        (["sample", "-c", "{ckpt}", "--top-p", "0"], ["--top-p"]),
        (["sample", "-c", "{ckpt}", "--top-p", "1.5"], ["--top-p"]),
        (["sample", "-c", "{ckpt}", "--length", "-5"], ["--length"]),
        (["sample", "-c", "{d}/none.pt"], ["no checkpoint"]),
        (["sample", "-c", "{d}/cut.pt"], ["truncated or corrupted"]),
        (["sample", "-c", "{d}/flipped.pt"], ["corrupted"]),
        (["sample", "-c", "{d}/future.pt"], ["version 42", "upgrade"]),
        (["sample", "-c", "{d}/other.pt"], ["not a chargen checkpoint"]),
        (["sample", "-c", "{d}/notes.pt"], ["not a chargen checkpoint"]),
        (["sample", "-c", "{d}/evil.pt"], ["would run code", "refused"]),
        (["sample", "--prime-file", "{d}/latin1.txt", "-c", "{ckpt}"], ["not valid utf-8"]),
        (["eval", "-c", "{ckpt}", "{d}/bin.dat"], ["binary"]),
        (["eval", "-c", "{d}/cut.pt", "{d}/ok.txt"], ["truncated or corrupted"]),
        (["info", "{d}/flipped.pt"], ["corrupted"]),
    ],
)
def test_bad_input_gets_one_clear_line(files, tiny_ckpt, args, words):
    args = [a.format(d=files, ckpt=tiny_ckpt) for a in args]
    one_clear_line(run(*args, cwd=files), *words)
    assert not (files / "pwned").exists()
    assert not (files / "checkpoints").exists()  # a failed command leaves no empty output folder


def test_no_checkpoints_yet(tmp_path, monkeypatch):
    from chargen import checkpoint

    monkeypatch.setattr(checkpoint, "bundled", lambda name: None)  # as in a package built without its model
    one_clear_line(run("sample", cwd=tmp_path), "chargen train")


@pytest.mark.parametrize("debug", [["--debug"], []])
def test_debug_shows_the_traceback(files, debug):
    cut = str(files / "cut.pt")
    args = [sys.executable, "-m", "chargen", *debug, "sample", "-c", cut]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode != 0
    assert ("Traceback" in result.stderr and "CheckpointError" in result.stderr) == bool(debug), result.stderr


def default_sigint():
    """For a child that is sent Ctrl-C: a shell's background job starts with SIGINT ignored, and children inherit it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_training_saves_last_and_says_how_to_resume(tmp_path, corpus_path):
    import signal
    import time

    out = tmp_path / "run"
    args = ["train", str(corpus_path), "-o", str(out), "--steps", "100000", "--eval-every", "10", "--hidden", "16"]
    args += ["--embed", "8", "--layers", "1", "--batch-size", "4", "--seq-len", "16"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chargen", *args], stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    deadline = time.time() + 60
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text()) and time.time() < deadline:  # the first evaluation
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"chargen train --resume {out / 'last.pt'}" in err
    step = json.loads(run("info", out / "last.pt", "--json").stdout)["step"]
    assert 10 <= step < 100000


def test_eval_says_when_the_text_is_what_the_model_was_trained_on(tiny_ckpt, corpus_path, tmp_path):
    same = run("eval", "-c", tiny_ckpt, corpus_path, "--json")
    assert same.exit_code == 0 and "was trained on" in same.stderr and "validation loss" in same.stderr
    assert 0.8 <= json.loads(same.stdout)["trained_share"] <= 0.95  # all but the held-out tail
    fresh = tmp_path / "fresh.txt"
    fresh.write_text(make_text(60, seed=42))  # the same words, in lines never trained on
    other = run("eval", "-c", tiny_ckpt, fresh, "--json")
    assert other.exit_code == 0 and "trained on" not in other.stderr
    assert json.loads(other.stdout)["trained_share"] < 0.05
