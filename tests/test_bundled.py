"""The model shipped in the package: used when there is no model of one's own, by name, through the safe loader."""

import json

import pytest
import torch

import chargen
from chargen import checkpoint

from .test_cli import run

BUNDLED = checkpoint.bundled("shakespeare")
pytestmark = pytest.mark.skipif(
    BUNDLED is None,
    reason="chargen/bundled/shakespeare.pt is missing: git checkout -- chargen/bundled",
)


def test_sample_with_no_model_of_ones_own_uses_the_bundled_one(tmp_path):
    result = run("sample", "--prime", "ROMEO:", "-l", 40, "--seed", 1, cwd=tmp_path)
    assert result.exit_code == 0 and "bundled tiny shakespeare model" in result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == 6 + 40 + 1


def test_a_model_of_ones_own_wins(tmp_path, tiny_ckpt):
    (tmp_path / "checkpoints" / "x").mkdir(parents=True)
    (tmp_path / "checkpoints" / "x" / "best.pt").write_bytes(tiny_ckpt.read_bytes())
    sampled = run("sample", "-l", 5, cwd=tmp_path)
    assert sampled.exit_code == 0 and "checkpoints/x/best.pt" in sampled.stderr
    (tmp_path / "shakespeare").write_bytes(tiny_ckpt.read_bytes())  # a file of that name is a path, not the name
    info = run("info", "shakespeare", "--json", cwd=tmp_path)
    assert info.exit_code == 0, info.output
    shown, mine = json.loads(info.stdout), json.loads(run("info", tiny_ckpt, "--json").stdout)
    assert (tmp_path / shown["checkpoint"]).resolve() == (tmp_path / "shakespeare").resolve() != BUNDLED.resolve()
    assert shown["model"] == mine["model"] and shown["parameters"] == mine["parameters"]  # the tiny model, not 2x384


@pytest.mark.parametrize("local", ["folder", "text"])
def test_a_local_file_or_folder_that_hides_the_bundled_name_is_named_in_the_error(tmp_path, local):
    hiding = tmp_path / "shakespeare"
    hiding.mkdir() if local == "folder" else hiding.write_text("my own notes on the plays\n")
    result = run("sample", "-c", "shakespeare", "-l", 5, cwd=tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "./shakespeare here hides the bundled model shakespeare" in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_named_in_python_and_by_info():
    model = chargen.load("shakespeare", "cpu")
    assert "".join(model.generate("ROMEO:", length=30, seed=1))
    info = run("info", "shakespeare")
    assert info.exit_code == 0 and str(BUNDLED) in info.stdout and "tinyshakespeare" in info.stdout


def test_small_and_verified():
    assert BUNDLED.stat().st_size < 5_000_000
    saved = checkpoint.read("shakespeare")  # the same checks as any file: checksum, zip, shapes
    assert saved.optimizer is None and saved.corpus.path is None
    assert {t.dtype for t in saved.weights.values()} <= {torch.bfloat16, torch.float16}
    assert saved.best_val is not None and saved.best_val < 1.6
