"""Shared fixtures: a small varied corpus and a tiny trained checkpoint, all on the CPU in seconds."""

from __future__ import annotations

import os
import random
import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def _cache(tmp_path_factory):
    """Tests share an id cache in pytest's own temporary folder (cleaned up by pytest), not the user's."""
    old = os.environ.get("CHARGEN_CACHE")
    os.environ["CHARGEN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["CHARGEN_CACHE"]
    else:
        os.environ["CHARGEN_CACHE"] = old


WORDS = (
    "the king is dead long live the queen and all her men shall ride at dawn to the castle by the sea "
    "where the old man waits with a lamp and a letter for the young prince who never came home"
).split()


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        speaker = rng.choice(["ROMEO", "JULIET", "NURSE"])
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
        lines.append(f"{speaker}:\n{words.capitalize()}.\n" if i % 3 == 0 else f"{words}.\n")
    return "".join(lines)


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def tiny_configs(**train):
    from chargen.config import ModelConfig, TrainConfig

    model = ModelConfig(layers=1, hidden=32, embed=16, dropout=0.0)
    settings = dict(batch_size=4, seq_len=32, lr=1e-2, warmup=5, eval_every=20, device="cpu", steps=60)
    settings.update(train)
    return model, TrainConfig(**settings)


def resumed_beside_whole(corpus, model, config, folder, stop_at: int):
    """Two trainers of one run: one unbroken, one stopped at `stop_at`, saved, and resumed from that file in a new
    trainer; both run to the end of the budget. (whole, resumed)."""
    from chargen import checkpoint
    from chargen.training.trainer import Trainer

    whole = Trainer(corpus, model, config, folder / "a")
    whole.run()
    first = Trainer(corpus, model, config, folder / "b")
    first.run(stop_at=stop_at)
    first._save(folder / "b" / "mid.pt")
    resumed = Trainer(corpus, model, config, folder / "b", resume=checkpoint.read(folder / "b" / "mid.pt"))
    resumed.run()
    return whole, resumed


def train_tiny(corpus_path, out, stop_at=None, resume=None, **train):
    from chargen.data import load_corpus
    from chargen.training.trainer import Trainer

    model, config = tiny_configs(**train)
    corpus = load_corpus(corpus_path, config.val_frac)
    trainer = Trainer(corpus, model, config, out, resume=resume)
    return trainer, trainer.run(stop_at=stop_at)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, corpus_path):
    out = tmp_path_factory.mktemp("run")
    _, result = train_tiny(corpus_path, out, steps=150)
    return result.best_path


def read_page(page: str) -> dict:
    """The data an inspect page holds, as its script reads it: `chargen.inspect.page.render`'s inverse."""
    import json
    import re

    return json.loads(re.search(r"const DATA = (.*?);\n", page, re.S).group(1))


def dequantised(block: dict, steps: int):
    """A block of an inspect page's bytes back to floats (T, U): what the page draws."""
    import base64

    import numpy as np

    q = np.frombuffer(base64.b64decode(block["data"]), np.uint8).reshape(steps, block["units"])
    return block["lo"] + q / 255.0 * (block["hi"] - block["lo"])


def chromium() -> str:
    """Debian's chromium for the page tests (with playwright to drive it), or a skip that says what to install."""
    pytest.importorskip("playwright.sync_api", reason="the page tests need playwright: pip install -e '.[test]'")
    found = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
    if found is None:
        pytest.skip("the page tests need Debian's chromium: sudo apt-get install chromium (see the README's tests)")
    return found


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by Playwright, for a module's page tests."""
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()
