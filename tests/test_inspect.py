"""chargen inspect: the page's numbers against eval and torch's cell equations, the look-back lesson, the page."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from chargen.config import ModelConfig, TrainConfig
from chargen.data import load_corpus
from chargen.generate import Generator
from chargen.inspect import page as inspect
from chargen.training.trainer import Trainer

from .conftest import chromium, dequantised, read_page, tiny_configs


def page_data(path) -> dict:
    return read_page(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_ckpt, corpus_path):
    out = tmp_path_factory.mktemp("inspect") / "page.html"
    text = corpus_path.read_text()[:3000]
    short = out.with_name("short.txt")
    short.write_text(text)
    run = subprocess.run(
        [sys.executable, "-m", "chargen", "inspect", "-c", str(tiny_ckpt), str(short), "-o", str(out), "--units", "4"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and "wrote" in run.stderr  # the page is the output; stdout stays clean
    return out, short


def test_the_surprisal_adds_up_to_what_eval_reports(page, tiny_ckpt):
    out, text = page
    data = page_data(out)
    scored = subprocess.run(
        [sys.executable, "-m", "chargen", "eval", "-c", str(tiny_ckpt), str(text), "--json"],
        capture_output=True,
        text=True,
    )
    nats = json.loads(scored.stdout)["nats_per_char"]
    bits = [b for b in data["surprisal"]["bits"] if b is not None]
    assert len(bits) == len(data["text"]) - 1  # every character but the first, once
    assert sum(bits) * math.log(2) / len(bits) == pytest.approx(nats, rel=1e-4)
    assert data["surprisal"]["mean_bits"] * math.log(2) == pytest.approx(nats, rel=1e-4)
    ranks = data["surprisal"]["rank"][1:]
    top = data["surprisal"]["top"][1:]
    assert all((r == 1) == (t[0][0] == c) for r, t, c in zip(ranks, top, data["text"][1:]))


def test_a_gate_on_the_page_is_the_one_torchs_cell_equations_give(page, tiny_ckpt):
    out, _ = page
    data = page_data(out)
    model = Generator.load(tiny_ckpt, "cpu").model
    ids = torch.as_tensor(Generator.load(tiny_ckpt, "cpu").tokenizer.encode(data["text"]).astype("int64"))
    t, layer = 1234, 0
    block = data["signals"]["f"]
    unit = block["units"][layer][1]
    # the state before character t, from the model's own forward over the text so far
    with torch.inference_mode():
        _, (h, c) = model(ids[None, :t])
        x = model.embed(ids[t])
        w_ih, w_hh, b_ih, b_hh = (w.detach() for w in model.rnn.all_weights[layer])
        hidden = model.config.hidden
        rows = slice(hidden + unit, hidden + unit + 1)  # nn.LSTM's rows: input, forget, cell, output gates
        f = torch.sigmoid(x @ w_ih[rows].T + b_ih[rows] + h[layer, 0] @ w_hh[rows].T + b_hh[rows])
    on_page = dequantised(block["layers"][layer], len(data["text"]))[t, 1]
    assert on_page == pytest.approx(float(f), abs=(block["layers"][layer]["hi"] - block["layers"][layer]["lo"]) / 255)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_gates_rebuild_the_state_the_cell_itself_computed(tmp_path, corpus_path, cell):
    _, config = tiny_configs(steps=20)
    model = ModelConfig(cell=cell, layers=2, hidden=32, embed=16, dropout=0.0)
    trainer = Trainer(load_corpus(corpus_path, config.val_frac), model, config, tmp_path)
    trainer.run()
    ids = torch.as_tensor(trainer.corpus.val[:300].astype("int64"))
    sig = inspect.signals(trainer.model, ids)
    v = {k: [torch.as_tensor(a) for a in layers] for k, layers in sig.items()}
    for k in range(2):
        h = v["h"][k]
        before = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
        if cell == "lstm":  # c_t = f c_{t-1} + i g; h_t = o tanh(c_t)
            c = v["c"][k]
            g = (c - v["f"][k] * torch.cat([torch.zeros_like(c[:1]), c[:-1]])) / v["i"][k]
            assert torch.allclose(v["o"][k] * torch.tanh(c), h, atol=1e-5)
            assert g.abs().max() <= 1 + 1e-3  # the candidate is a tanh
        else:  # h_t = (1 - z) n + z h_{t-1}
            assert torch.allclose((1 - v["z"][k]) * v["n"][k] + v["z"][k] * before, h, atol=1e-5)


def test_the_gradient_reaches_back_as_far_as_the_text_needs(tmp_path):
    """Each line is 10 random letters, a bar, and the same letters again: the copy needs 11 characters of memory.
    An LSTM trained on it still feels inputs 15 to 20 characters back; one trained on the same letters in random
    order, where nothing depends on what came before, has all but forgotten them."""
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(10)) for _ in range(4000)]
    copied = "".join(f"{w}|{w}\n" for w in words)
    shuffled = list(copied)
    rng.shuffle(shuffled)
    far = {}
    for name, text in (("copy", copied), ("shuffled", "".join(shuffled))):
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        corpus = load_corpus(path, 0.1)
        model = ModelConfig(layers=1, hidden=64, embed=16, dropout=0.0)
        config = TrainConfig(batch_size=16, seq_len=64, steps=1500, eval_every=1500, lr=3e-3, device="cpu")
        trainer = Trainer(corpus, model, config, tmp_path / name)
        trainer.run()
        ids = torch.as_tensor(corpus.val[:3000].astype("int64"))
        norms = np.array(inspect.lookback(trainer.model, ids, furthest=20))
        far[name] = (norms[15:] / norms[0]).mean()  # beyond the copy's distance
    assert far["copy"] > 5 * far["shuffled"], far


def test_the_page_of_a_2x384_model_on_5000_characters_stays_small(corpus_path):
    data = inspect.report(inspect.load(["shakespeare"]), (corpus_path.read_text() * 4)[:5000])  # bundled 2x384
    assert inspect.mib(inspect.render(data)) < 10
    assert len(data["signals"]["h"]["layers"]) == 2 and data["signals"]["h"]["layers"][0]["units"] == 384
    assert all(len(u) == inspect.UNITS for u in data["signals"]["c"]["units"])


def test_every_view_renders_offline_in_a_real_browser(page, tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    out, _ = page
    errors, fetched = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1200, "height": 800})
        tab = context.new_page()
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("request", lambda r: fetched.append(r.url))
        tab.goto(out.as_uri())
        for view in ("surprisal", "cells", "span", "saturation", "lookback", "training"):
            tab.click(f"nav button[data-view={view}]")
            assert tab.is_visible(f"section#{view}")
            tab.screenshot(path=str(tmp_path / f"{view}.png"))
        layers = page_data(out)["model"]["layers"]
        assert tab.locator("#saturation svg").count() == layers and tab.locator("#lookback svg polyline").count() == 1
        assert tab.locator("#training svg").count() == 3

        tab.click("nav button[data-view=cells]")
        before = tab.eval_on_selector("#cells-text span:nth-child(200)", "s => s.style.background")
        tab.select_option("#signal", "h")
        tab.fill("#unit", "7")
        tab.dispatch_event("#unit", "input")
        after = tab.eval_on_selector("#cells-text span:nth-child(200)", "s => s.style.background")
        assert tab.evaluate("document.body.dataset.coloured") == "h:0:7" and after != before

        tab.click("nav button[data-view=span]")
        tab.evaluate(
            """() => { const s = document.querySelectorAll('#span-text span'); const r = document.createRange();
            r.setStart(s[100].firstChild, 0); r.setEnd(s[120].firstChild, 1);
            const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(r);
            document.getElementById('span-text').dispatchEvent(new MouseEvent('mouseup', {bubbles: true})); }"""
        )
        assert tab.locator("#span-units tr.pick").count() == 12
        assert tab.locator("#span-text span.fire").count() > 0  # where the top unit fires as hard as on the span
        tab.screenshot(path=str(tmp_path / "span-found.png"))
        browser.close()
    assert errors == [] and all(url.startswith("file:") for url in fetched)


def test_the_text_properties_units_are_ranked_against():
    text = "def f(a, b):\n    s = 'it''s'\n    return \"o'er\" + (a)\n"
    f = inspect.features(text)
    at = lambda s: text.index(s)
    assert f["inside brackets"][at("a, b")] and not f["inside brackets"][at("def")]
    assert f["inside quotes"][at("it")] and f["inside quotes"][at("er")] and not f["inside quotes"][at("return")]
    assert f["indentation"][at("return")] == 4 and f["indentation"][at("def")] == 0
    assert f["position in line"][at("f(")] == 5 and f["line ending in a colon"][at("def")] == 1
    assert f["position in word"][at("turn")] == 3


def test_the_page_controls_and_charts_a_reader_uses(page, tmp_path):
    """The unit box refuses what is not a unit, ticks are read once each, the legend names whole, a gate's dot
    opens its unit, and a cell's tooltip gives the model's guesses beside its value."""
    executable = chromium()
    from playwright.sync_api import sync_playwright

    out, _ = page
    hidden = page_data(out)["model"]["hidden"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_context(offline=True, viewport={"width": 1200, "height": 800}).new_page()
        errors = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto(out.as_uri())
        tab.click("nav button[data-view=cells]")
        assert "forget" in tab.text_content("#signals-help")
        for typed in (str(hidden + 100), "-3", "2.5"):
            tab.fill("#unit", typed)
            tab.dispatch_event("#unit", "input")
            note = tab.text_content("#cells-note")
            assert f"from 0 to {hidden - 1}" in note and "NaN" not in note, (typed, note)
        tab.select_option("#signal", "h")  # every unit's h is on the page (c and the gates for a few)
        tab.fill("#unit", "3")
        tab.dispatch_event("#unit", "input")
        assert "NaN" not in tab.text_content("#cells-note")
        assert tab.evaluate("document.body.dataset.coloured").endswith(":3")
        tab.hover("#cells-text span:nth-child(40)")
        assert "the model expected" in tab.text_content("#tip")

        for view in ("saturation", "lookback", "training"):
            tab.click(f"nav button[data-view={view}]")
            for svg in tab.locator(f"#{view} svg").all():
                y_ticks = [t.text_content() for t in svg.locator("text[text-anchor=end]").all()]
                x_ticks = [t.text_content() for t in svg.locator("text[text-anchor=middle]:not([transform])").all()][
                    :-1
                ]
                for ticks in (x_ticks, y_ticks):
                    assert len(ticks) >= 2 and len(set(ticks)) == len(ticks), ticks  # each value once
        legend = tab.text_content("#lookback figcaption")
        assert all(c["name"] in legend for c in page_data(out)["lookback"])  # whole names, however long

        tab.click("nav button[data-view=saturation]")
        dot = tab.locator("#saturation circle.unit").nth(5)
        title = dot.locator("title").text_content()
        assert title.startswith("layer 0, unit ")
        unit, gate = title.split("unit ")[1].split(",")[0], title.split(", ")[2].split(" gate")[0]
        dot.click()
        assert tab.is_visible("section#cells") and tab.input_value("#unit") == unit
        assert tab.input_value("#signal") == gate
        tab.screenshot(path=str(tmp_path / "opened-from-a-dot.png"))
        browser.close()
    assert errors == []


def test_inspect_never_writes_over_its_text_or_a_file_it_did_not_write(tiny_ckpt, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from chargen.cli import cli

    monkeypatch.chdir(tmp_path)
    text = "the king is dead, long live the queen\n" * 20
    page = tmp_path / "index.html"
    page.write_text(text)
    notes, kept = tmp_path / "notes.txt", tmp_path / "notes.html"
    notes.write_text(text)
    kept.write_text("<p>my own notes</p>")
    run = lambda *args: CliRunner().invoke(cli, ["inspect", "-c", str(tiny_ckpt), *map(str, args)])
    over_input = run(page)
    assert over_input.exit_code != 0 and "is the text being read" in over_input.output and page.read_text() == text
    over_mine = run(notes)
    assert over_mine.exit_code != 0 and "--overwrite" in over_mine.output and kept.read_text() == "<p>my own notes</p>"
    explicit = run(notes, "-o", notes)
    assert explicit.exit_code != 0 and notes.read_text() == text
    assert run(notes, "--overwrite").exit_code == 0 and "chargen inspect" in kept.read_text()
    assert run(notes).exit_code == 0  # a page of its own is replaced without asking


def test_a_page_of_more_characters_than_open_quickly_is_warned_of_with_its_size(tiny_ckpt, corpus_path, monkeypatch):
    import re

    from click.testing import CliRunner

    import chargen.cli.inspect
    from chargen.cli import cli

    monkeypatch.chdir(corpus_path.parent)
    run = lambda *args: CliRunner().invoke(cli, ["inspect", "-c", str(tiny_ckpt), str(corpus_path), *map(str, args)])
    quick = run("--chars", 3000, "-o", "quick.html")
    assert quick.exit_code == 0 and "warning" not in quick.stderr
    monkeypatch.setattr(chargen.cli.inspect, "INSPECT_MAX_CHARS", 2000)  # what opens quickly, made small
    slow = run("--chars", 3000, "-o", "slow.html")
    warned = [line for line in slow.stderr.splitlines() if "warning" in line]
    assert slow.exit_code == 0 and len(warned) == 1 and "up to 2,000 characters" in warned[0]
    expected = float(re.search(r"3,000 characters make a page of about ([\d.]+) MiB", warned[0]).group(1))
    written = (corpus_path.parent / "slow.html").stat().st_size / 2**20
    assert abs(expected - written) <= 0.1 + 0.1 * written  # the estimate, as the page came out
