import os
import pickle

import pytest
import torch

from chargen import checkpoint
from chargen.errors import CheckpointError


def test_round_trip_with_weights_only(tiny_ckpt, tmp_path):
    data = checkpoint.load(tiny_ckpt)
    raw = torch.load(tiny_ckpt, weights_only=True)  # plain torch can read it safely too
    assert raw["format"] == "chargen-checkpoint" and raw["format_version"] == checkpoint.VERSION
    for key in ("model_config", "train_config", "tokenizer", "model", "optimizer", "trainer", "metrics"):
        assert key in data
    copy = tmp_path / "copy.pt"
    checkpoint.save(data, copy)
    again = checkpoint.load(copy)
    for name, tensor in data["model"].items():
        assert torch.equal(again["model"][name], tensor)


def test_an_interrupted_save_leaves_the_old_checkpoint(tiny_ckpt, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    data = checkpoint.load(tiny_ckpt)
    checkpoint.save(data, path)
    before = path.read_bytes()

    def dies_mid_write(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(data, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    monkeypatch.undo()
    checkpoint.load(path)


@pytest.mark.parametrize("where", [0.05, 0.3, 0.5, 0.7, 0.9, 0.995])
def test_bytes_overwritten_anywhere_are_caught(tiny_ckpt, tmp_path, where):
    blob = bytearray(tiny_ckpt.read_bytes())
    at = int(len(blob) * where)
    while blob[at : at + 8] == b"Z" * 8:  # torch pads its zip records with Zs that nothing reads: skip them
        at += 8
    blob[at : at + 8] = bytes(b ^ 0x5A for b in blob[at : at + 8])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupted|not a chargen checkpoint"):
        checkpoint.load(bad)


def test_truncated(tiny_ckpt, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated|not a chargen"):
        checkpoint.load(bad)


def test_unknown_format_version(tiny_ckpt, tmp_path):
    data = checkpoint.load(tiny_ckpt)
    path = tmp_path / "future.pt"
    checkpoint.save({**data}, path)
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="version 99.*upgrade"):
        checkpoint.load(path)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/chargen-pwned-by-pickle",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    if os.path.exists("/tmp/chargen-pwned-by-pickle"):
        os.unlink("/tmp/chargen-pwned-by-pickle")
    path = tmp_path / "evil.pt"
    torch.save({"format": "chargen-checkpoint", "x": Boom()}, path)
    with pytest.raises(CheckpointError, match="would run code"):
        checkpoint.load(path)
    assert not os.path.exists("/tmp/chargen-pwned-by-pickle")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="not a chargen checkpoint"):
        checkpoint.load(plain)
    assert not os.path.exists("/tmp/chargen-pwned-by-pickle")


def test_other_torch_files_and_missing_paths(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a chargen checkpoint"):
        checkpoint.load(other)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nope.pt")
