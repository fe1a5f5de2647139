"""chargen export: the page writes in Chromium offline with torch's logits; the ONNX graph is the model's step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from chargen import checkpoint
from chargen.export import Exported
from chargen.model import CharLM

from .conftest import make_text
from .test_checkpoint import Boom
from .test_cli import one_clear_line, run
from .test_pages import HOSTILE_NAME, hostile_ckpt  # noqa: F401  (a fixture)

README = Path(__file__).parent.parent / "README.md"
TEXT = make_text(20, seed=3)[:200]


@pytest.fixture(scope="module")
def models(tiny_ckpt, tmp_path_factory):
    """{cell: checkpoint}: the tiny trained LSTM, and a GRU and a plain RNN written by chargen's own writer; the GRU's
    hidden size is no multiple of 8, so its page runs the JavaScript kernel, the others WebAssembly's."""
    folder, saved = tmp_path_factory.mktemp("cells"), checkpoint.read(tiny_ckpt)
    paths = {"lstm": tiny_ckpt}
    for cell in ("gru", "rnn"):
        config = replace(saved.model_config, cell=cell, layers=2, hidden=20 if cell == "gru" else 32)
        torch.manual_seed(0)
        weights = CharLM(saved.vocab_size, config).state_dict()
        ckpt = replace(saved, model_config=config, weights=weights, other=None, averaged=False, state=None)
        checkpoint.save_model(replace(ckpt, optimizer=None, batch_size=None), folder / f"{cell}.pt")
        paths[cell] = folder / f"{cell}.pt"
    return paths


def torch_logits(path, text: str, half: bool = False) -> np.ndarray:
    """(T, V) logits of `CharLM.step` after each character of `text` from a fresh state; `half`: with the weights
    rounded to float16, as the page holds them."""
    exported = Exported.load(path)
    model = exported.model
    if half:
        model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    ids = torch.from_numpy(exported.checkpoint.tokenizer.encode(text).astype(np.int64))
    state, out = model.initial_state(1), []
    with torch.inference_mode():
        for i in ids:
            logits, state = model.step(i[None], state)
            out.append(logits[0].numpy())
    return np.array(out)


# -- ONNX ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_onnx_graph_is_the_models_step_in_onnxruntime(models, cell, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason='the ONNX tests need pip install -e ".[test]"')
    out = tmp_path / "model.onnx"
    assert run("export", "-c", models[cell], "--onnx", out).exit_code == 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one stream of tiny matrices: threads would only wait on each other
    session = ort.InferenceSession(str(out), options)
    meta = session.get_modelmeta().custom_metadata_map
    exported = Exported.load(models[cell])
    assert json.loads(meta["chargen.chars"]) == exported.checkpoint.tokenizer.chars
    assert json.loads(meta["chargen.model"]) == exported.model.config.to_dict()
    assert json.loads(meta["chargen.banned"]) == [0]
    names = [i.name for i in session.get_inputs()]
    assert names == ["ids", "h", "c"] if cell == "lstm" else ["ids", "h"]
    ids = torch.from_numpy(exported.checkpoint.tokenizer.encode(TEXT).astype(np.int64))
    state = exported.model.initial_state(2)  # two streams: the text, and the text one character later
    feeds = {n: s.numpy() for n, s in zip(names[1:], state)}
    with torch.inference_mode():
        for t in range(len(ids) - 1):
            x = ids[t : t + 2]
            logits, state = exported.model.step(x, state)
            got = session.run(None, {"ids": x.numpy(), **feeds})
            feeds = dict(zip(names[1:], got[1:]))
            np.testing.assert_allclose(got[0], logits.numpy(), atol=1e-4, rtol=0)
            for a, b in zip(got[1:], state):
                np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)


def readme_loop() -> str:
    """The onnxruntime loop the README shows."""
    section = README.read_text().split("\n## Export\n", 1)[1]
    return next(b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "onnxruntime" in b)


def test_the_readmes_onnxruntime_loop_writes(models, tmp_path):
    pytest.importorskip("onnxruntime", reason='the ONNX tests need pip install -e ".[test]"')
    assert run("export", "-c", models["lstm"], "--onnx", tmp_path / "shakespeare.onnx").exit_code == 0
    (tmp_path / "loop.py").write_text(readme_loop())
    done = subprocess.run([sys.executable, "loop.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout.rstrip("\n")
    chars = set(checkpoint.read(models["lstm"]).tokenizer.chars[1:])
    assert text.startswith("ROMEO:") and len(text) >= len("ROMEO:") + 200
    assert set(text) <= chars


def test_without_onnx_the_export_says_how_to_get_it(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, as where it is not installed
    result = run("export", "-c", models["lstm"], "--onnx", tmp_path / "m.onnx")
    stderr = one_clear_line(result, "onnx", 'pip install "chargen[export]"')
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_the_bundled_models_page_is_within_6_mb_and_says_what_it_is(tmp_path):
    page = tmp_path / "shakespeare.html"
    result = run("export", "-c", "shakespeare", "--html", page)
    assert result.exit_code == 0 and result.stdout == ""  # what it says goes to stderr
    text = page.read_text()
    assert page.stat().st_size <= 6_000_000
    best = checkpoint.read(checkpoint.bundled("shakespeare")).best_val  # the figure the shipped model carries
    assert f"best val {best:.3f} nats/char" in text
    assert float(re.search(r'"best_val_loss":([0-9.]+)', text)[1]) == pytest.approx(best, abs=1e-4)


# -- refusals ------------------------------------------------------------------------------------------------


def test_hostile_and_damaged_checkpoints_are_refused_and_nothing_is_written(tiny_ckpt, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "chargen-checkpoint", "x": Boom()}, evil)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(Path(tiny_ckpt).read_bytes()[:-200])
    for path, says in ((evil, "would run code"), (damaged, "truncated or corrupted")):
        result = run("export", "-c", path, "--html", tmp_path / "m.html", "--onnx", tmp_path / "m.onnx")
        one_clear_line(result, says)
    assert not (tmp_path / "m.html").exists() and not (tmp_path / "m.onnx").exists()
    assert not os.path.exists("/tmp/chargen-pwned-by-pickle")


def test_a_subword_model_is_refused_by_the_page_and_exported_as_onnx(models, tmp_path):
    from chargen.subword import SentencePieceTokenizer

    sp = SentencePieceTokenizer.train(make_text(200).split("\n"), vocab_size=320)
    saved = checkpoint.read(models["lstm"])
    weights = CharLM(sp.vocab_size, saved.model_config).state_dict()
    path = tmp_path / "sp.pt"
    checkpoint.save_model(replace(saved, tokenizer=sp, weights=weights, other=None, averaged=False, state=None), path)
    one_clear_line(run("export", "-c", path, "--html", tmp_path / "sp.html"), "character models", "--onnx")
    assert not (tmp_path / "sp.html").exists()
    onnx = pytest.importorskip("onnx", reason='the ONNX tests need pip install -e ".[test]"')
    assert run("export", "-c", path, "--onnx", tmp_path / "sp.onnx").exit_code == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "sp.onnx")).metadata_props}
    assert json.loads(meta["chargen.tokenizer"])["kind"] == "sp" and "chargen.chars" not in meta


def test_export_needs_a_target_and_a_folder(models, tmp_path):
    one_clear_line(run("export", "-c", models["lstm"]), "--html", "--onnx")
    one_clear_line(run("export", "-c", models["lstm"], "--html", tmp_path / "no" / "m.html"), "no folder")


# -- the page in Chromium --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pages(models, hostile_ckpt, tmp_path_factory):  # noqa: F811
    """{cell: page}; the LSTM's from a checkpoint whose name is markup."""
    folder, out = tmp_path_factory.mktemp("pages"), {}
    for cell, path in {**models, "lstm": hostile_ckpt}.items():
        out[cell] = folder / f"{cell}.html"
        assert run("export", "-c", path, "--html", out[cell]).exit_code == 0
    return out


def opened(browser, page: Path):  # noqa: F811
    """A tab with `page` open and ready, recording every request, error and dialog."""
    tab, seen = browser.new_page(), {"requests": [], "errors": []}
    tab.on("request", lambda r: seen["requests"].append(r.url))
    tab.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: seen["errors"].append(str(e)))
    tab.on("dialog", lambda d: (seen["errors"].append("dialog: " + d.message), d.dismiss()))
    tab.goto(page.as_uri())
    tab.wait_for_selector("#status[data-state=ready]", timeout=20_000)
    return tab, seen


def written(tab, prime: str, seed: int, length: int, stop: str = "") -> str:
    tab.fill("#prime", prime)
    tab.fill("#seed", str(seed))
    tab.fill("#length", str(length))
    tab.fill("#stop", stop)
    tab.click("#write")
    tab.wait_for_selector("#status[data-state=done]", timeout=30_000)
    return tab.text_content("#out")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_pages_logits_are_torchs(browser, pages, models, hostile_ckpt, cell):  # noqa: F811
    tab, seen = opened(browser, pages[cell])
    assert tab.get_attribute("#status", "data-kernel") == ("JavaScript" if cell == "gru" else "WebAssembly")
    got = np.array(tab.evaluate("(text) => chargen.logits(text)", TEXT))
    want = torch_logits(hostile_ckpt if cell == "lstm" else models[cell], TEXT, half=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert seen == {"requests": [pages[cell].as_uri()], "errors": []}


def test_the_page_writes_offline_again_with_a_seed_and_stops(browser, pages, hostile_ckpt):  # noqa: F811
    tab, seen = opened(browser, pages["lstm"])
    assert HOSTILE_NAME in tab.text_content("#meta") and tab.evaluate("window.pwned") is None
    assert "validation loss" in tab.text_content("#meta")
    policy = tab.get_attribute('meta[http-equiv="Content-Security-Policy"]', "content")
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy.split("script-src")[1]
    first = written(tab, "ROMEO:", seed=3, length=300)
    chars = set(checkpoint.read(hostile_ckpt).tokenizer.chars[1:])
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 300 and set(first) <= chars
    assert written(tab, "ROMEO:", seed=3, length=300) == first  # the same seed: the same text
    assert written(tab, "ROMEO:", seed=4, length=300) != first
    again, _ = opened(browser, pages["lstm"])
    assert written(again, "ROMEO:", seed=3, length=300) == first  # and in a fresh tab
    stopped = written(tab, "ROMEO:", seed=3, length=300, stop="e")  # where the text first wrote an "e"
    assert stopped == first[: first.index("e", len("ROMEO:"))]
    tab.fill("#length", "10000000")
    tab.fill("#stop", "")
    tab.click("#write")
    tab.wait_for_selector("#halt:enabled")
    while len(tab.text_content("#out")) < 50:  # it writes
        tab.wait_for_timeout(10)
    tab.click("#halt")
    tab.wait_for_selector("#status[data-state=stopped]", timeout=10_000)
    n = int(tab.get_attribute("#status", "data-chars"))
    assert 0 < n < 10_000_000 and len(tab.text_content("#out")) == len("ROMEO:") + n
    assert "stopped" in tab.text_content("#status")
    assert seen == {"requests": [pages["lstm"].as_uri()], "errors": []}


def test_the_page_refuses_settings_out_of_range(browser, pages):  # noqa: F811
    tab, _ = opened(browser, pages["gru"])
    tab.fill("#top-p", "1.5")
    tab.click("#write")
    assert "top-p must be above 0 and at most 1, not 1.5" in tab.text_content("#status")
    assert tab.text_content("#out") == ""
