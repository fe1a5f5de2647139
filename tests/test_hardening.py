"""What a careless or hostile user does: each case once ended in a lost model, a huge allocation, a silent
wrong result or an internal error. Numbers refer to the items of the hardening issue."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import chargen
from chargen import checkpoint
from chargen.chat.conversation import Conversation
from chargen.config import SampleConfig
from chargen.data import load_corpus
from chargen.errors import ChargenError, CheckpointError, CorpusError, SettingError, TrainingError
from chargen.files import FolderLock

from .conftest import make_text, tiny_configs, train_tiny
from .test_cli import default_sigint, one_clear_line, run

TINY = ["--hidden", 16, "--embed", 8, "--layers", 1, "--batch-size", 4, "--seq-len", 16, "--device", "cpu"]


def chargen_cmd(*args, stdin=None, env=None, **kw):
    return subprocess.run(
        [sys.executable, "-m", "chargen", *map(str, args)],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kw,
    )


def peak_rss_mb(*args) -> tuple[float, subprocess.CompletedProcess]:
    """Run `chargen ARGS` in a fresh interpreter; its peak resident memory in MB (VmHWM: this process alone,
    unlike getrusage, which counts the memory of the process that forked it)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['chargen', *{[str(a) for a in args]!r}]\n"
        "try:\n    runpy.run_module('chargen', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print('RSS', hwm, file=sys.stderr)\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rss = [line for line in done.stderr.splitlines() if line.startswith("RSS ")]
    assert rss, done.stderr
    return int(rss[-1].split()[1]) / 1024, done


# -- 1-3: data lost -------------------------------------------------------------------------------


def test_1_a_second_run_never_replaces_the_first(tmp_path, corpus_path):
    first = run("train", corpus_path, "--steps", 10, "--eval-every", 10, *TINY, cwd=tmp_path)
    assert first.exit_code == 0, first.stderr
    best = tmp_path / "checkpoints" / "play" / "best.pt"
    before = best.read_bytes()
    second = run("train", corpus_path, "--steps", 10, "--eval-every", 10, "--seed", 2, *TINY, cwd=tmp_path)
    assert second.exit_code == 0, second.stderr
    assert "checkpoints/play/ holds an earlier run" in second.stderr and "checkpoints/play-2/" in second.stderr
    assert best.read_bytes() == before and (tmp_path / "checkpoints" / "play-2" / "best.pt").exists()

    into = run("train", corpus_path, "-o", tmp_path / "checkpoints" / "play", "--steps", 5, *TINY)
    one_clear_line(into, "already holds a run", "--resume", "--overwrite")
    assert best.read_bytes() == before
    replaced = run("train", corpus_path, "-o", tmp_path / "checkpoints" / "play", "--steps", 5, "--overwrite", *TINY)
    assert replaced.exit_code == 0 and best.read_bytes() != before


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a\0b", "", ".hidden", "sub/dir", "a\\b", "x" * 200])
def test_2_chat_names_stay_in_the_chats_folder(tiny_ckpt, tmp_path, monkeypatch, name):
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path / "home"))
    conv = Conversation(chargen.load(tiny_ckpt, "cpu"), SampleConfig(length=5, seed=1))
    with pytest.raises(ChargenError, match="not a name for a conversation"):
        conv.save(name)
    assert not (tmp_path / "escape.pt").exists() and not os.path.exists("/tmp/abs.pt")


def test_2_a_saved_conversation_is_replaced_only_when_asked(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_HOME", str(tmp_path))
    conv = Conversation(chargen.load(tiny_ckpt, "cpu"), SampleConfig(length=5, seed=1))
    path = conv.save("talk")
    before = path.read_bytes()
    conv.feed("the king")
    "".join(conv.answer())
    with pytest.raises(ChargenError, match="/save! talk replaces it"):
        conv.save("talk")
    assert path.read_bytes() == before
    conv.save("talk", overwrite=True)
    assert path.read_bytes() != before


def test_3_two_runs_into_one_folder(tmp_path, corpus_path):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):  # as if another `chargen train` were writing there
        busy = run("train", corpus_path, "-o", out, "--steps", 5, *TINY)
        one_clear_line(busy, "another chargen train", f"pid {os.getpid()}", "--out")
    (out / ".lock").write_text("99999999")  # a lock file left by a process that died: not held
    assert run("train", corpus_path, "-o", out, "--steps", 5, *TINY).exit_code == 0


# -- 4-5: resources a crafted file can take -----------------------------------------------------


def crafted(tiny_ckpt, path, change, checksum=True):
    """The tiny checkpoint with `change(dict)` applied, re-saved with a valid checksum (or as it is)."""
    data = torch.load(tiny_ckpt, weights_only=True)
    change(data)
    if checksum:
        checkpoint.save({k: v for k, v in data.items() if k not in ("format", "format_version")}, path)
    else:
        torch.save(data, path)
    return path


def test_4_a_tensor_that_claims_more_than_it_holds_is_refused_unbuilt(tiny_ckpt, tmp_path):
    def giant(data):  # one float stretched to 10^9 elements by a zero stride: 4 GB if ever copied
        data["model"]["head.bias"] = torch.as_strided(torch.zeros(1), (10**9,), (0,))

    path = crafted(tiny_ckpt, tmp_path / "giant.pt", giant, checksum=False)  # a checksum would copy the 4 GB
    assert path.stat().st_size < 10**6
    rss, done = peak_rss_mb("info", path)
    assert done.returncode == 1 and "claims more bytes than it holds" in done.stderr
    assert rss < 1500


@pytest.mark.parametrize("field, value", [("layers", 10**6), ("hidden", 10**9), ("embed", 10**9)])
def test_4_a_config_beyond_bounds_is_refused_before_building(tiny_ckpt, tmp_path, field, value):
    path = crafted(tiny_ckpt, tmp_path / "big.pt", lambda data: data["model_config"].update({field: value}))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"invalid setting \\({field} must be from 1 to"):
        checkpoint.read(path)
    assert time.perf_counter() - start < 10


def test_4_weights_that_do_not_fit_the_config_are_refused(tiny_ckpt, tmp_path):
    path = crafted(tiny_ckpt, tmp_path / "wide.pt", lambda data: data["model_config"].update(hidden=4096))
    with pytest.raises(CheckpointError, match="do not fit a 1x4096 LSTM"):
        checkpoint.read(path)


def test_4_a_compressed_zip_entry_is_refused_before_torch_reads_it(tiny_ckpt, tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tiny_ckpt) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
        dst.writestr("archive/data/999", b"\0" * 50_000_000)  # 50 MB in a few KB
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(CheckpointError, match="compressed entries"):
        checkpoint.read(bomb)


def test_5_a_long_prime_is_fed_in_windows(tiny_ckpt, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text(make_text(60_000, seed=4))  # about 2.4 MB
    rss, done = peak_rss_mb("sample", "-c", tiny_ckpt, "--prime-file", prime, "-n", 4, "-l", 5, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert rss < 900  # the whole prime in one batch of 4 took several GB


# -- 6-9: silent wrong results ------------------------------------------------------------------


def test_6_a_damaged_id_cache_is_rebuilt(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CHARGEN_CACHE", str(cache))
    path = tmp_path / "c.txt"
    path.write_text(make_text(300))
    first = load_corpus(path, 0.1)
    first.train, first.val = first.train.copy(), first.val.copy()  # not a view of the file damaged below
    (train_bin,) = cache.glob("*.train.bin")
    train_bin.write_bytes(train_bin.read_bytes()[:100])  # cut short
    again = load_corpus(path, 0.1)
    assert again.train_chars == first.train_chars and len(again.train) == len(first.train)
    blob = bytearray(train_bin.read_bytes())
    blob[50] ^= 0xFF  # one id changed, size the same
    train_bin.write_bytes(bytes(blob))
    assert (load_corpus(path, 0.1).train == first.train).all()
    for meta in cache.glob("c-*.json"):  # a vocabulary cut short in the corpus record
        wrapped = json.loads(meta.read_text())
        if "tokenizers" in wrapped["data"]:
            wrapped["data"]["tokenizers"]["char"]["chars"] = wrapped["data"]["tokenizers"]["char"]["chars"][:5]
            meta.write_text(json.dumps(wrapped))
    cut = load_corpus(path, 0.1)
    assert cut.tokenizer.vocab_size == first.tokenizer.vocab_size and (cut.val == first.val).all()


def test_7_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path, corpus_path):
    out = tmp_path / "run"
    train_tiny(corpus_path, out, steps=20, eval_every=10)
    good = checkpoint.read(out / "last.pt")
    with pytest.raises(TrainingError, match="stopped being a finite number.*holds the last good weights"):
        train_tiny(corpus_path, out, steps=200, eval_every=10, lr=1e30, warmup=0, resume=good)
    kept = checkpoint.read(out / "last.pt")
    assert all(torch.isfinite(t).all() for t in kept.weights.values())
    result = run("train", corpus_path, "-o", tmp_path / "fresh", "--lr", "1e30", "--warmup", 0, "--steps", 50, *TINY)
    one_clear_line(result, "stopped being a finite number", "lower --lr")
    assert not (tmp_path / "fresh" / "best.pt").exists()


def test_8_resuming_on_other_text_of_the_same_length_is_refused(tmp_path, corpus_path):
    out = tmp_path / "run"
    assert run("train", corpus_path, "-o", out, "--steps", 10, "--eval-every", 10, *TINY).exit_code == 0
    other = tmp_path / "other.txt"
    text = corpus_path.read_text()
    other.write_text(text[::-1])  # same length, same characters, other text
    refused = run("train", other, "--resume", out / "last.pt", "--steps", 20)
    one_clear_line(refused, "not the text this run was trained on", "--corpus-changed")
    accepted = run("train", other, "--resume", out / "last.pt", "--steps", 20, "--corpus-changed")
    assert accepted.exit_code == 0 and "differs from the text this run was trained on" in accepted.stderr


def test_9_a_nul_byte_anywhere_is_refused_with_its_line(tmp_path):
    late = tmp_path / "late.txt"
    late.write_bytes(make_text(400).encode() + b"\nafter the first 8 KiB\x00\n")
    assert late.stat().st_size > 8192
    with pytest.raises(CorpusError, match=r"NUL byte \(line \d+\)"):
        load_corpus(late, 0.1)


def test_9_an_unreadable_subfolder_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "texts"
    (folder / "locked").mkdir(parents=True)
    (folder / "a.txt").write_text(make_text(300))
    real = os.scandir

    def scandir(path="."):  # as for a folder without read permission (root reads everything, so pretend)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    corpus = load_corpus(folder, 0.1)
    assert any("locked: cannot be read (Permission denied), left out" in line for line in corpus.skipped)


# -- 10-12: a session that ends or misleads -----------------------------------------------------


def test_10_ctrl_c_during_a_checkpoint_write_finishes_it_then_stops(tmp_path, corpus_path, monkeypatch):
    from chargen.data import load_corpus as load
    from chargen.training import trainer as train_module
    from chargen.training.trainer import Trainer

    real_save = train_module.checkpoint.save_model
    calls = []

    def interrupted_save(ckpt, path):
        calls.append(path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while a checkpoint is being written
        real_save(ckpt, path)

    monkeypatch.setattr(train_module.checkpoint, "save_model", interrupted_save)
    model, config = tiny_configs(steps=100, eval_every=5)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if pytest is a `&` job
    try:
        result = Trainer(load(corpus_path, 0.1), model, config, tmp_path).run()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.interrupted and result.step == 5
    assert checkpoint.read(tmp_path / "last.pt").position.step == 5


def test_10_double_ctrl_c_never_aborts_or_prints_a_traceback(tmp_path, corpus_path):
    out = tmp_path / "run"
    args = ["train", corpus_path, "-o", out, "--steps", 100000, "--eval-every", 5, *TINY]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chargen", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "internal error" not in err
    assert "stopping without saving" in err or "chargen train --resume" in err
    checkpoint.read(out / "last.pt")  # whole, whichever Ctrl-C won


CHAT_LINES = {  # a line that once ended the chat, and what it says now
    "/save a\0b": "not a name for a conversation",
    "/set seed 1e26": "seed takes an int",
    "/set seed 100000000000000000000000000": "seed must be from 0 to",
    "/set temp inf": "temp must be a finite number",
    "/set temp nan": "temp must be a finite number",
    "/set bogus 1": "KEY one of",
}


def test_11_12_chat_lines_that_once_ended_the_session(tiny_ckpt, tmp_path):
    lines = "".join(f"{line}\n/show\n" for line in CHAT_LINES)
    done = chargen_cmd("chat", "-c", tiny_ckpt, "-l", 5, stdin=lines.encode(), env={"CHARGEN_HOME": str(tmp_path)})
    err = done.stderr.decode()
    assert done.returncode == 0 and "internal error" not in err
    for says in CHAT_LINES.values():
        assert says in err
    assert err.count("temp 0.8") == len(CHAT_LINES)  # /show after each: the session went on


def test_11_a_damaged_or_edited_saved_conversation_is_a_message(tiny_ckpt, tmp_path):
    env = {"CHARGEN_HOME": str(tmp_path)}
    assert chargen_cmd("chat", "-c", tiny_ckpt, "-l", 5, stdin=b"the king\n/save talk\n", env=env).returncode == 0
    saved = tmp_path / "chats" / "talk.pt"
    blob = saved.read_bytes()
    (tmp_path / "chats" / "cut.pt").write_bytes(blob[: len(blob) // 2])
    data = torch.load(saved, weights_only=True)
    data["turns"][-1]["state"] = [torch.zeros(3)]  # edited, then saved with a valid checksum
    checkpoint.save(
        {k: v for k, v in data.items() if k not in ("format", "format_version")}, tmp_path / "chats" / "edit.pt"
    )
    done = chargen_cmd("chat", "-c", tiny_ckpt, "-l", 5, stdin=b"/load cut\n/load edit\n/show\n", env=env)
    err = done.stderr.decode()
    assert done.returncode == 0 and "internal error" not in err
    assert "cut.pt is truncated or corrupted" in err and "use another checkpoint" not in err
    assert "edit.pt is damaged" in err and "hidden state does not fit" in err and "temp 0.8" in err


def test_11_bad_bytes_and_closed_streams_in_chat(tiny_ckpt, tmp_path):
    env = {"CHARGEN_HOME": str(tmp_path), "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}
    bad = chargen_cmd("chat", "-c", tiny_ckpt, "-l", 5, stdin=b"the \xff king\n/show\n", env=env)
    assert bad.returncode == 0 and "internal error" not in bad.stderr.decode() and b"temp 0.8" in bad.stderr
    no_stdin = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -m chargen chat -c "{tiny_ckpt}" <&- >&-'], capture_output=True, timeout=120
    )
    assert no_stdin.returncode == 0 and b"internal error" not in no_stdin.stderr


def test_12_bounded_and_validated_flags(tiny_ckpt, tmp_path):
    one_clear_line(run("sample", "-c", tiny_ckpt, "--temp", "inf"), "--temp must be a finite number")
    one_clear_line(run("sample", "-c", tiny_ckpt, "--seed", 10**23), "--seed must be from 0 to")
    one_clear_line(run("train", "x.txt", "--seed", 10**23), "--seed must be from 0 to")
    closed = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -m chargen sample -c "{tiny_ckpt}" -l 5 >&-'],
        capture_output=True,
        timeout=120,
    )
    assert closed.returncode == 1 and b"standard output is closed" in closed.stderr
    bad_prime = subprocess.run(
        [sys.executable.encode(), b"-m", b"chargen", b"sample", b"-c", bytes(tiny_ckpt), b"--prime", b"caf\xe9"],
        capture_output=True,
        timeout=120,
    )
    assert bad_prime.returncode == 2 and b"--prime is not valid UTF-8" in bad_prime.stderr


def test_12_a_huge_temperature_never_writes_the_unknown_symbol(tiny_ckpt):
    from chargen.config import MAX_TEMP

    model = chargen.load(tiny_ckpt, "cpu")
    for temp in (1e-30, MAX_TEMP):
        assert "\ufffd" not in "".join(model.generate("the", length=200, temp=temp, seed=1))
    for temp in (MAX_TEMP * 2, 3.5e38):  # past float32's range it wrote nothing but U+FFFD: refused, by name
        with pytest.raises(SettingError, match=f"temp must be at most {MAX_TEMP:g}"):
            "".join(model.generate("the", length=5, temp=temp))


# -- 13: messages that misled -------------------------------------------------------------------


def test_13_messages_say_what_is_true(tiny_ckpt, tmp_path, corpus_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_clear_line(run("train", fifo), "not a file or a folder")

    spaced = tmp_path / "my runs"
    done = run("train", corpus_path, "-o", spaced, "--steps", 5, *TINY)
    assert f"chargen sample -c '{spaced / 'best.pt'}'" in done.stderr

    small = tmp_path / "small.txt"
    small.write_text(make_text(30))
    big = run("train", small, "--tokenizer", "sp", "--vocab-size", 5000, "--steps", 1, *TINY)
    assert "use --vocab-size" in big.stderr and "or less" in big.stderr and "smaller" not in big.stderr

    hidden = crafted(tiny_ckpt, tmp_path / "h.pt", lambda d: d["model_config"].update(hidden=-3))
    msg = one_clear_line(run("info", hidden), "holds an invalid setting (hidden must be")
    assert "--hidden" not in msg

    version = crafted(tiny_ckpt, tmp_path / "v.pt", lambda d: None)
    raw = torch.load(version, weights_only=True)
    raw["format_version"] = "1"
    torch.save(raw, version)
    msg = one_clear_line(run("info", version), "damaged", "format version '1'")
    assert "upgrade" not in msg


def test_13_a_flipped_byte_in_the_pickle_is_corruption_not_an_attack(tiny_ckpt, tmp_path):
    with zipfile.ZipFile(tiny_ckpt) as z:
        pkl = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
        at = pkl.header_offset + len(pkl.FileHeader()) + 40  # inside the pickle's first global names
    blob = bytearray(tiny_ckpt.read_bytes())
    blob[at] ^= 0x20
    bad = tmp_path / "flip.pt"
    bad.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.read(bad)


@pytest.mark.parametrize("where", ["an opcode", "a global's name"])
def test_13_flipped_bytes_in_the_pickle_behind_fresh_crcs_are_damage_not_an_attack(tiny_ckpt, tmp_path, where):
    with zipfile.ZipFile(tiny_ckpt) as z:
        entries = [(i.filename, z.read(i)) for i in z.infolist()]
    name, pkl = next((n, b) for n, b in entries if n.endswith("data.pkl"))
    at = 5 if where == "an opcode" else pkl.index(b"collections") + 8
    flipped = bytearray(pkl)
    flipped[at] ^= 0x20
    flipped[at + 1] ^= 0x20
    bad = tmp_path / "flip.pt"
    with zipfile.ZipFile(bad, "w") as z:  # written anew: every CRC matches the changed bytes
        for n, b in entries:
            z.writestr(n, bytes(flipped) if n == name else b)
    with pytest.raises(CheckpointError, match="truncated or corrupted") as caught:
        checkpoint.read(bad)
    assert "run code" not in str(caught.value)


# -- 14: the Python API -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda m: list(m.generate(length="5")), "length"),
        (lambda m: list(m.generate(temp=None)), "temp"),
        (lambda m: list(m.generate(top_k=2.5)), "top_k"),
        (lambda m: list(m.generate(seed=-1)), "seed"),
        (lambda m: list(m.generate(prime=None)), "prime"),
        (lambda m: list(m.generate(stop=5)), "stop"),
        (lambda m: m.prime("the", batch=0), "batch"),
        (lambda m: chargen.load(None), "path"),
        (lambda m: chargen.load(5), "path"),
        (lambda m: chargen.load("x.pt", device="tpu"), "device"),
        (lambda m: chargen.train(5), "corpus"),
        (lambda m: chargen.train("x.txt", hidden="big"), "hidden"),
        (lambda m: chargen.train("x.txt", bogus=1), "bogus"),
        (lambda m: chargen.train("x.txt", out=3.5), "out"),
        (lambda m: Conversation(m).set("bogus", 1), "bogus"),
        (lambda m: Conversation(m).set("temp", "hot"), "temp"),
        (lambda m: Conversation(m).feed(None), "line"),
    ],
)
def test_14_python_errors_are_the_librarys_and_name_the_argument(tiny_ckpt, call, names):
    model = chargen.load(tiny_ckpt, "cpu")
    with pytest.raises(ChargenError) as caught:
        call(model)
    assert str(caught.value).startswith(names) or f" {names}" in str(caught.value)
    if isinstance(caught.value, SettingError):
        assert "--" not in str(caught.value)  # a Python caller typed no flag


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU says; torch sees one here")
def test_14_a_device_that_is_not_here(tiny_ckpt):
    with pytest.raises(SettingError, match="device cuda:0: torch sees no such device here"):
        chargen.load(tiny_ckpt, device="cuda:0")


def test_14_a_string_stop_is_one_stop_string(tiny_ckpt):
    model = chargen.load(tiny_ckpt, "cpu")
    text = "".join(model.generate("the king", length=400, seed=3, stop="\n\n"))
    assert "\n\n" not in text and text.count("\n") > 0  # single newlines pass; a blank line stops


# -- 15: leftovers --------------------------------------------------------------------------------


def test_15_temporaries_of_dead_writers_are_cleaned_and_metrics_never_repeat(tmp_path, corpus_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.pt.99999999.abcd.tmp"  # from a writer killed with -9 (no such pid)
    stale.write_bytes(b"half")
    train_tiny(corpus_path, out, steps=20, eval_every=10, stop_at=10)
    assert not stale.exists()
    mid = out / "mid.pt"
    mid.write_bytes((out / "last.pt").read_bytes())
    train_tiny(corpus_path, out, steps=30, eval_every=10)
    train_tiny(corpus_path, out, steps=30, eval_every=10, resume=checkpoint.read(mid))  # back to step 10
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30]
