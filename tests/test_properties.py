"""Hostile corpora, caches, checkpoints and chat lines: chargen works or raises a ChargenError, in bounded memory."""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import math
import os
import pickletools
import shlex
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import chargen
from chargen import checkpoint, data
from chargen.chat.conversation import Conversation
from chargen.chat.repl import SETTINGS, Repl
from chargen.config import MAX_SEED, SampleConfig
from chargen.errors import ChargenError, CheckpointError, CorpusError

from .conftest import train_tiny
from .test_repl import Recorder

# No example database (.hypothesis/): each run draws afresh and leaves nothing in the work tree.
CHEAP = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
COSTLY = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call, kind=ChargenError):
    """(call's result, None), or (None, the error) when it raised `kind`; any other exception fails the test."""
    try:
        return call(), None
    except kind as e:
        assert str(e).strip(), f"{type(e).__name__} with an empty message"
        return None, e


# -- corpora -------------------------------------------------------------------------------------

BOM = "\ufeff".encode()
NEWLINES = [b"\n", b"\r", b"\r\n", b"\n\r", b"\r\r\n", b"\n\n\n"]
BROKEN = [  # NUL, encoded lone surrogates, bytes UTF-8 never uses, overlongs, past U+10FFFF, cut-off sequences
    *[b"\x00", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xff", b"\xfe", b"\xc0\x80", b"\xe0\x80\x80"],
    *[b"\xf4\x90\x80\x80", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"],
]
unicode_char = st.characters(exclude_categories=["Cs"])  # every category but lone surrogates, which UTF-8 cannot hold
utf8_piece = st.one_of(
    st.text(unicode_char, max_size=60).map(str.encode),
    st.sampled_from(NEWLINES),
    st.just(BOM),  # past the start of a file it is an ordinary character
    st.tuples(unicode_char, st.integers(500, 3000)).map(lambda cn: (cn[0] * cn[1]).encode()),  # one long line
    st.just(b"the king is dead, long live the queen\n" * 3),  # enough to make a corpus
)
any_piece = st.one_of(
    utf8_piece,
    st.sampled_from(BROKEN),
    st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass")),  # may hold lone surrogates
)


def file_bytes(piece) -> st.SearchStrategy[bytes]:
    return st.tuples(st.booleans(), st.lists(piece, max_size=8)).map(lambda b: (BOM if b[0] else b"") + b"".join(b[1]))


content = st.one_of(file_bytes(utf8_piece), file_bytes(any_piece))
NAMES = ["a.txt", "b.txt", "B.md", "z", "sub/c.txt", "sub/.hidden.txt", ".hidden.txt", ".git/d.txt"]


def expected_text(files: list[bytes]) -> str | None:
    """What load_corpus must read from these files' bytes, in order; None where it must raise CorpusError."""
    text, ends_line = "", True
    for raw in files:
        try:
            part = raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError:
            return None
        if "\0" in part:
            return None
        if part:
            text += ("" if ends_line else "\n") + part  # each file starts on a new line
            ends_line = part.endswith("\n")
    return text if len(text) >= data.MIN_CHARS else None


def included(root: Path, files: dict[str, bytes]) -> list[bytes]:
    """A folder's files that a corpus reads, in its order: not hidden, not empty, no NUL in the first 8 KiB."""
    keep = {
        root / name: raw
        for name, raw in files.items()
        if raw and not any(part.startswith(".") for part in Path(name).parts) and b"\0" not in raw[:8192]
    }
    return [keep[p] for p in sorted(keep)]


def write_layout(root: Path, layout: bytes | dict[str, bytes]) -> tuple[Path, list[bytes]]:
    """A file or a folder of files under `root`: (its path, the bytes a corpus of it reads, in order)."""
    if isinstance(layout, bytes):
        path = root / "text.txt"
        path.write_bytes(layout)
        return path, [layout]
    path = root / "folder"
    path.mkdir()
    for name, raw in layout.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(raw)
    return path, included(path, layout)


@CHEAP
@given(
    layout=st.one_of(content, st.dictionaries(st.sampled_from(NAMES), content, max_size=4)),
    chunk=st.sampled_from([3, 64, data.CHUNK_CHARS]),  # small chunks put CRLFs and the split on chunk edges
)
def test_a_corpus_loads_exactly_or_is_refused(tmp_path_factory, layout, chunk):
    root = tmp_path_factory.mktemp("corpus")
    path, files = write_layout(root, layout)
    expected = expected_text(files) if files else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARGEN_CACHE", str(root / "cache"))
        mp.setattr(data, "read_chunks", functools.partial(data.read_chunks, chunk_chars=chunk))
        corpus, error = outcome(lambda: data.load_corpus(path, 0.1), CorpusError)
    if expected is None:
        assert error is not None, "load_corpus accepted a corpus it should refuse"
        return
    assert error is None, f"a valid corpus was refused: {error}"
    split = len(expected) - max(1, int(len(expected) * 0.1))
    assert (corpus.train_chars, corpus.val_chars) == (split, len(expected) - split)
    assert corpus.tokenizer.decode(corpus.train.tolist()) == expected[:split]
    assert corpus.tokenizer.decode(corpus.val.tolist()) == expected[split:]


def snapshot(corpus) -> dict:
    """Everything a load returns, copied out of the memory maps (so the files under them may be damaged)."""
    return {
        "train": np.array(corpus.train),
        "val": np.array(corpus.val),
        "chars": (corpus.train_chars, corpus.val_chars),
        "tokenizer": corpus.tokenizer.to_dict(),
        "fingerprint": corpus.fingerprint,
    }


def same(a: dict, b: dict) -> bool:
    arrays = all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in ("train", "val"))
    return arrays and all(a[k] == b[k] for k in ("chars", "tokenizer", "fingerprint"))


def role(cache_file: Path) -> str:
    """Which part of the id cache a file holds."""
    if cache_file.suffix == ".bin":
        return cache_file.suffixes[-2].lstrip(".")  # train or val
    return "vocabulary" if b'"tokenizers"' in cache_file.read_bytes() else "ids"


JUNK = [b"", b"{}", b"null", b"[]", b'"x"', b'{"sha256": "", "data": {}}', b'{"data": {"chars": 5}}', b"\xff\xfe"]


def damage(path: Path, draw) -> None:
    """Damage one cache file as a crash, a full disk or a careless edit might: never a forged checksum."""
    raw = bytearray(path.read_bytes())
    how = draw(st.sampled_from(["truncate", "flip", "append", "replace", "delete", "edit"]))
    if how == "truncate":
        path.write_bytes(raw[: draw(st.integers(0, max(len(raw) - 1, 0)))])
    elif how == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] ^= draw(st.integers(1, 255))
        path.write_bytes(raw)
    elif how == "append":
        path.write_bytes(raw + draw(st.binary(min_size=1, max_size=16)))
    elif how == "replace":
        path.write_bytes(draw(st.sampled_from(JUNK) | st.binary(max_size=64)))
    elif how == "delete":
        path.unlink()
    elif how == "edit" and path.suffix == ".json":  # change a recorded value, keep the old checksum
        wrapped = json.loads(raw)
        key = draw(st.sampled_from(sorted(wrapped["data"])))
        wrapped["data"][key] = draw(st.sampled_from([None, 0, -1, 10**30, 1e308, "x", [], {}, [{"bytes": 0}]]))
        path.write_text(json.dumps(wrapped))


@COSTLY
@given(
    text=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0\r"), min_size=101, max_size=400),
    choices=st.data(),
)
def test_a_damaged_id_cache_is_rebuilt_never_trusted(tmp_path_factory, text, choices):
    root = tmp_path_factory.mktemp("cached")
    path = root / "text.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARGEN_CACHE", str(root / "cache"))
        first = snapshot(data.load_corpus(path, 0.1))
        files = sorted((root / "cache").iterdir(), key=role)  # their names hold a hash of the file's mtime
        assert sorted(map(role, files)) == ["ids", "train", "val", "vocabulary"]
        for target in choices.draw(st.lists(st.sampled_from(files), min_size=1, max_size=3, unique=True)):
            damage(target, choices.draw)
        again = data.load_corpus(path, 0.1)
        assert same(snapshot(again), first), "a damaged cache changed what was loaded"
        assert same(snapshot(data.load_corpus(path, 0.1)), first), "the rebuilt cache does not read back"


# -- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, corpus_path):
    """A real checkpoint of a tiny model trained for two steps: small, and quick to make."""
    _, result = train_tiny(corpus_path, tmp_path_factory.mktemp("props-run"), steps=2, eval_every=2)
    return result.best_path


@pytest.fixture(scope="module")
def contents(ckpt):
    return torch.load(ckpt, weights_only=True)


def places(tree, at: tuple = ()):
    """The key path of every value inside nested dicts and lists."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield at + (key,)
        yield from places(value, at + (key,))


def parent_of(tree, at: tuple):
    """The dict or list that holds the value at `at`; None when an earlier change removed it."""
    for key in at[:-1]:
        try:
            tree = tree[key]
        except (KeyError, IndexError, TypeError):
            return None
    return tree if isinstance(tree, dict | list) else None


SCALARS = [
    *[None, "", "lstm", "\ud800", 0, -1, 1, 2**31, 2**63, 10**30, -(10**30), True, 0.5, -0.0],
    *[math.nan, math.inf, -math.inf, 1e308, b"\x00\xff", complex(1, 2), [], [None], {}, {"": 1}, (1, 2)],
    *[torch.float32, torch.Size([2, 3])],
]


def tensors_like(old) -> list[torch.Tensor]:
    """Tensors that differ from `old` (or from a small matrix) in shape, dtype, layout or values."""
    usable = isinstance(old, torch.Tensor) and old.dim() and old.numel() and not old.is_complex()
    t = old if usable else torch.zeros(2, 3)
    return [
        *[torch.zeros(0), torch.tensor(math.nan), torch.zeros(3, dtype=torch.int64), torch.ones(2, dtype=torch.bool)],
        *[torch.zeros(2, dtype=torch.complex64), t.double(), t.bfloat16(), t.half(), t.to(torch.int32)],
        *[t.reshape(-1), t.unsqueeze(0), t[:1], t.flip(0), t.mT if t.dim() == 2 else t.flip(0)],
        *[torch.full(t.shape, math.nan), torch.full(t.shape, -math.inf), t.expand(2, *t.shape)],  # expand: zero stride
    ]


VOCAB = [chr(c) for c in range(0x100, 0x100 + 100_000 + 0x800) if not 0xD800 <= c <= 0xDFFF][:100_000]
# Reading 100,000 characters takes seconds (torch's safe unpickler), so examples use a fifth: still far too many.
ENLARGED = [  # (where, value): settings far beyond any model, and sizes a reader must not trust
    (("model_config", "layers"), 10**6),
    (("model_config", "hidden"), 10**9),
    (("model_config", "embed"), 10**9),
    (("model_config", "layers"), 64),  # the largest allowed, together a model of hundreds of gigabytes
    (("model_config", "hidden"), 1 << 16),
    (("model_config", "embed"), 1 << 16),
    (("tokenizer", "chars"), VOCAB[:20_000]),
    (("train_config", "batch_size"), 10**9),
    (("train_config", "seq_len"), 10**12),
    (("trainer", "batch_size"), 10**9),
    (("corpus", "train_tokens"), 10**30),
    (("trainer", "step"), 2**63),
]


def mutate(tree: dict, draw) -> None:
    """Remove, replace or enlarge one value anywhere in a checkpoint's dict."""
    how = draw(st.sampled_from(["remove", "replace", "enlarge"]))
    if how == "enlarge":
        at, value = draw(st.sampled_from(ENLARGED))
        if isinstance(parent_of(tree, at), dict):
            parent_of(tree, at)[at[-1]] = copy.deepcopy(value)  # a later mutation must not change the constant
        return
    at = draw(st.sampled_from(list(places(tree))))
    parent = parent_of(tree, at)
    if how == "remove":
        del parent[at[-1]]
    else:
        parent[at[-1]] = copy.deepcopy(draw(st.sampled_from(SCALARS + tensors_like(parent[at[-1]]))))


@COSTLY
@given(choices=st.data())
def test_a_hostile_checkpoint_reads_or_raises_a_checkpoint_error(tmp_path_factory, contents, choices):
    tree = copy.deepcopy(contents)
    for _ in range(choices.draw(st.integers(1, 3))):
        mutate(tree, choices.draw)
    path = tmp_path_factory.mktemp("hostile") / "model.pt"
    if choices.draw(st.sampled_from(["chargen", "chargen", "torch"])) == "chargen":
        checkpoint.save(tree, path)  # a fresh checksum: only the contents are hostile
    else:
        torch.save(tree, path)
    outcome(lambda: checkpoint.read(path), CheckpointError)
    model, _ = outcome(lambda: chargen.load(path, "cpu"), CheckpointError)
    if model is not None:
        assert isinstance("".join(model.generate("the", length=3, seed=0)), str)


PROBE = r"""
import json, resource, sys, time
from chargen import checkpoint
from chargen.errors import ChargenError
import torch
torch.load  # torch and its libraries are mapped now: what follows is measured over them
unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes there, KiB on Linux
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit


def mapped() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


try:  # should a guard regress, the probe fails with an error instead of taking the machine's memory; the cap
    # sits 3 GB above what is mapped already, so a CUDA build of torch (which maps more than that) is not measured
    cap = mapped() + (3 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
except (ValueError, OSError):
    pass
for path in sys.argv[1:]:
    start = time.monotonic()
    try:
        checkpoint.read(path)
        result = "read"
    except ChargenError as e:
        result = "ChargenError" if str(e).strip() else "ChargenError with no message"
    except BaseException as e:
        result = f"{type(e).__name__}: {e}"[:300]
    added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit - baseline
    print(json.dumps({"path": path, "result": result, "seconds": time.monotonic() - start, "added": added}), flush=True)
"""


def forge(tensor: torch.Tensor, path: Path, numel: int | None = None, shape=None, stride=None) -> None:
    """Save {"format": ..., "w": tensor} (1-D) with its storage's element count, shape or stride replaced in the
    pickle: files that torch itself never writes, whose tensor claims far more than the file holds."""
    buf = io.BytesIO()
    torch.save({"format": checkpoint.FORMAT, "format_version": checkpoint.VERSION, "w": tensor}, buf)
    source = zipfile.ZipFile(buf)

    def pickled_int(n: int) -> bytes:
        if 0 <= n < 256:
            return b"K" + bytes([n])
        if -(2**31) <= n < 2**31:
            return b"J" + struct.pack("<i", n)
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw

    def pickled_tuple(values) -> bytes:
        return b"".join(map(pickled_int, values)) + {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(values)]

    def rewrite(pickle: bytes) -> bytes:
        # The storage is ('storage', FloatStorage, key, 'cpu', numel); after BINPERSID come offset, (size,), (stride,),
        # with BINPUTs (memo entries) between some of them.
        ops = list(pickletools.genops(pickle))
        cpu = next(i for i, (_, arg, _) in enumerate(ops) if arg == "cpu")
        count = next(i for i in range(cpu, len(ops)) if ops[i][0].name in ("BININT1", "BININT2", "BININT", "LONG1"))
        pid = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
        names = [ops[i][0].name for i in (count + 1, pid + 3, pid + 6)]
        assert names == ["TUPLE", "TUPLE1", "TUPLE1"], f"torch's pickle changed: {names}"
        new = {}  # op index -> its replacement
        if numel is not None:
            new[count] = pickled_int(numel)
        if shape is not None:
            new[pid + 2], new[pid + 3] = pickled_tuple(shape), b""
        if stride is not None:
            new[pid + 5], new[pid + 6] = pickled_tuple(stride), b""
        ends = [pos for _, _, pos in ops[1:]] + [len(pickle)]
        return b"".join(new.get(i, pickle[pos:end]) for i, ((_, _, pos), end) in enumerate(zip(ops, ends)))

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for entry in source.infolist():
            raw = source.read(entry)
            z.writestr(entry.filename, rewrite(raw) if entry.filename.endswith("data.pkl") else raw)


def overclaims(tree) -> bool:
    """Some tensor in `tree` claims more bytes than its storage holds."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size() > tree.untyped_storage().nbytes()
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list | tuple) else ()
    return any(overclaims(v) for v in items)


def test_the_nastiest_checkpoints_are_refused_in_bounded_memory_and_time(tmp_path, contents):
    pytest.importorskip("resource", reason="measuring memory needs the resource module (Linux or macOS)")
    files = {}

    def hostile(name: str, where: tuple, value) -> None:
        tree = copy.deepcopy(contents)
        parent_of(tree, where)[where[-1]] = value
        files[name] = tmp_path / f"{name}.pt"
        torch.save(tree, files[name])  # not checkpoint.save: its checksum would materialise the giants

    config = {"cell": "lstm", "layers": 64, "hidden": 1 << 16, "embed": 1 << 16, "dropout": 0.0}
    tree = {**copy.deepcopy(contents), "model_config": config, "tokenizer": {"kind": "char", "chars": VOCAB}}
    files["huge-config"] = tmp_path / "huge-config.pt"
    checkpoint.save(tree, files["huge-config"])  # a valid checksum: it gets as far as building the model
    hostile("zero-stride", ("model", "embed.weight"), torch.zeros(1).expand(10**9))  # 4 GB claimed, 4 bytes held
    strided = torch.zeros(4).as_strided((10**5, 10**5), (0, 0))  # 40 GB claimed, 16 bytes held
    hostile("strided-state", ("trainer", "state"), [strided, strided])
    hostile("strided-metric", ("metrics",), [{"loss": strided}])
    files["huge-storage"] = tmp_path / "huge-storage.pt"
    forge(torch.arange(4.0), files["huge-storage"], numel=10**12)  # a 4 TB storage held in 16 bytes
    files["huge-shape"] = tmp_path / "huge-shape.pt"
    forge(torch.arange(4.0), files["huge-shape"], shape=(10**6, 10**6), stride=(1, 1))

    for name in ("zero-stride", "strided-state", "strided-metric"):  # small files whose tensors claim gigabytes
        assert files[name].stat().st_size < 1 << 20 and overclaims(torch.load(files[name], weights_only=True)), name
    for name in ("huge-storage", "huge-shape"):  # torch itself refuses these; chargen must refuse them as cheaply
        assert files[name].stat().st_size < 1 << 20
        with pytest.raises(RuntimeError):
            torch.load(files[name], weights_only=True)

    run = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, files.values())], capture_output=True, text=True, timeout=90
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == len(files), run.stderr[-2000:]
    for name, r in zip(files, results):
        assert r["result"] in ("read", "ChargenError"), f"{name}: {r['result']}"
        assert r["seconds"] < 60, f"{name} took {r['seconds']:.0f}s"
        assert r["added"] < 1.5e9, f"{name}: added {r['added'] / 1e9:.2f} GB of resident memory"


# -- chat ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator(ckpt):
    return chargen.load(ckpt, "cpu")


def drive(generator, lines: list[str]) -> tuple[int, Recorder]:
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    out = Recorder()
    code = Repl(Conversation(generator, SampleConfig(length=5)), read, out, describe=generator.describe).run()
    return code, out


def as_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


word = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["none", "off", "0", "-1", "1e-300", "nan", "inf", "\\n\\n", "\\", '"', "'"]),
    st.integers(-(2**40), 2**40).map(str),
)
name = st.one_of(
    st.just("talk"),  # saved, then loaded, overwritten and loaded again
    st.sampled_from(["../x", "/abs", "a\x00b", "", ".", "..", "~", "x/y", "a\\b", "x.pt", "\u00e9" * 100]),
    st.text(max_size=120),
    st.text(min_size=100, max_size=300),
)
# A length that never finishes is the person's choice, not a bug.
UNSAFE = {"length": lambda n: n > 30}


VERBS = "/set /set /set /save /save /save! /load /load /show /reset /undo /clear /help".split()  # the risky ones most


@st.composite
def command(draw) -> str:
    verb = draw(st.sampled_from(VERBS))
    if verb in ("/save", "/save!", "/load"):
        given_name = draw(name)
        return f"{verb} {draw(st.sampled_from([given_name, shlex.quote(given_name)]))}"
    if verb != "/set":
        return verb + draw(st.sampled_from(["", " extra words"]))
    key, value = draw(st.sampled_from(SETTINGS) | st.text(max_size=8)), draw(word)
    line = f"/set {shlex.quote(key)} {draw(st.sampled_from([value, shlex.quote(value)]))}"
    try:
        words = shlex.split(line)
    except ValueError:
        return line
    if len(words) >= 3 and words[1] in UNSAFE and as_int(words[2]) is not None:
        assume(not UNSAFE[words[1]](int(words[2])))
    return line


line = st.one_of(
    st.text(max_size=40),
    command(),
    command(),
    st.text(max_size=20).map(lambda s: "/" + s),  # an unknown command, or one shlex cannot read
    st.sampled_from(['"""', '"""a', 'b"""', "/bye"]),  # multi-line turns, and leaving
)


@CHEAP
@given(lines=st.lists(line, max_size=8))
def test_a_chat_session_survives_any_input_and_writes_only_its_chats(tmp_path_factory, generator, lines):
    root = tmp_path_factory.mktemp("chat")
    (root / "cwd").mkdir()
    outside = {p: sorted(os.listdir(p)) for p in (root.parent, Path("/"))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARGEN_HOME", str(root / "home"))
        mp.chdir(root / "cwd")
        code, _ = drive(generator, lines)
    assert code == 0
    written = [p for p in root.rglob("*") if not p.is_dir()]
    assert all(p.parent == root / "home" / "chats" and p.suffix == ".pt" for p in written), written
    assert {p: sorted(os.listdir(p)) for p in outside} == outside


# -- what these properties once found, one reproduction each ----------------------------------------------


def test_deeply_nested_lists_in_a_checkpoint(tmp_path, contents):
    tree = copy.deepcopy(contents)
    nested: list = []
    for _ in range(3000):
        nested = [nested]
    tree["metrics"] = nested
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # only for writing it: pickle recurses too
    try:
        torch.save(tree, tmp_path / "deep.pt")
    finally:
        sys.setrecursionlimit(limit)
    outcome(lambda: checkpoint.read(tmp_path / "deep.pt"), CheckpointError)


def test_a_float_setting_holding_an_int_too_large_for_a_float(tmp_path, contents):
    tree = copy.deepcopy(contents)
    tree["model_config"]["dropout"] = 10**400
    checkpoint.save(tree, tmp_path / "model.pt")
    outcome(lambda: checkpoint.read(tmp_path / "model.pt"), CheckpointError)


def test_verifying_a_checkpoint_costs_about_its_size(tmp_path, contents, monkeypatch):
    tree = copy.deepcopy(contents)
    storage = torch.zeros(1 << 16)  # 256 KiB, stored once ...
    tree["metrics"] = [{"v": storage[:]} for _ in range(1000)]  # ... and viewed 1000 times (256 MB to hash)
    torch.save(tree, tmp_path / "views.pt")
    hashed = 0

    class Counting:
        def __init__(self):
            self.h = hashlib.sha256()

        def update(self, b):
            nonlocal hashed
            hashed += memoryview(b).nbytes
            self.h.update(b)

        def hexdigest(self):
            return self.h.hexdigest()

    monkeypatch.setattr(checkpoint, "hashlib", SimpleNamespace(sha256=Counting))
    outcome(lambda: checkpoint.read(tmp_path / "views.pt"), CheckpointError)
    assert hashed < 4 * (tmp_path / "views.pt").stat().st_size


def test_a_cache_file_of_nested_brackets_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGEN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "text.txt"
    path.write_text("the king is dead, long live the queen\n" * 5)
    first = snapshot(data.load_corpus(path, 0.1))
    for meta in (tmp_path / "cache").glob("*.json"):
        meta.write_text("[" * 100_000)
    assert same(snapshot(data.load_corpus(path, 0.1)), first)


def test_a_session_with_the_largest_seed_takes_a_second_turn(generator):
    assert drive(generator, [f"/set seed {MAX_SEED}", "the king", "the queen"])[0] == 0


def test_a_line_with_undecodable_bytes_does_not_end_the_session(generator):
    # prompt_toolkit decodes a terminal's bytes with errors="surrogateescape": b"caf\xe9" arrives as "caf\udce9".
    assert drive(generator, ["caf\udce9", "/show"])[0] == 0
