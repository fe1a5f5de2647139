"""The pages show what comes from a file or a request as text: in Chromium, nothing from the data runs as script."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pytest

from chargen.inspect import page as inspect

from .conftest import read_page
from .test_serve import serving

HOSTILE_NAME = "<img src=x onerror=window.pwned=1>"
HOSTILE_TEXT = (
    "the king </script><script>window.pwned=2</script> is dead\n"
    "<!-- <script> window.pwned=3 </script> -->\n<svg onload=window.pwned=4> long live the queen\n"
)


@pytest.fixture(scope="module")
def hostile_ckpt(tiny_ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / HOSTILE_NAME
    folder.mkdir()
    path = folder / f"{HOSTILE_NAME}.pt"
    shutil.copy(tiny_ckpt, path)
    return path


def opened(browser, url: str):
    """A tab at `url` that records errors, dialogs and whether any planted script ran."""
    tab = browser.new_page()
    seen = []
    tab.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: seen.append(str(e)))
    tab.on("dialog", lambda d: (seen.append("dialog: " + d.message), d.dismiss()))
    tab.goto(url)
    return tab, seen


def test_the_inspect_page_shows_a_hostile_name_and_text_as_text(browser, hostile_ckpt, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(HOSTILE_TEXT * 4)
    out = tmp_path / "page.html"
    run = subprocess.run(
        [sys.executable, "-m", "chargen", "inspect", "-c", str(hostile_ckpt), str(text), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "</script><script>" not in page and "<!--" not in page.split("<script>")[1]  # data stays in its string
    assert "script-src 'sha256-" in page and "'unsafe-inline'" not in page.split("script-src")[1].split(";")[0]
    assert read_page(page)["text"] == (HOSTILE_TEXT * 4)[: len(read_page(page)["text"])]

    tab, seen = opened(browser, out.as_uri())
    for view in ("surprisal", "cells", "span", "saturation", "lookback", "training"):
        tab.click(f"nav button[data-view={view}]")
        assert tab.is_visible(f"section#{view}")
    assert HOSTILE_NAME in tab.text_content("#lookback-chart")  # shown, as text
    assert "window.pwned=2" in tab.text_content("#surprisal-text")
    tab.screenshot(path=str(tmp_path / "lookback.png"))
    assert tab.evaluate("window.pwned") is None and tab.locator("#lookback img, #meta img").count() == 0
    assert seen == []


def test_the_inspect_page_runs_only_its_own_script(browser, tiny_ckpt, tmp_path):
    """Should some data ever reach the markup, the page's policy still refuses to run it."""
    page = inspect.render(inspect.report(inspect.load([str(tiny_ckpt)]), "the king is dead, long live the queen"))
    planted = page.replace('<div id="tip"></div>', '<div id="tip"></div><img src=x onerror="window.pwned=1">')
    assert planted != page
    path = tmp_path / "planted.html"
    path.write_text(planted)
    tab, seen = opened(browser, path.as_uri())
    tab.wait_for_timeout(300)
    assert tab.evaluate("window.pwned") is None
    assert "bits/char" in tab.text_content("#surprisal-summary")  # while the page's own script ran
    assert any("Content Security Policy" in line for line in seen), seen  # the handler was refused, and said so


def test_the_server_page_shows_a_hostile_name_prompt_and_text_as_text(browser, hostile_ckpt, tmp_path):
    with serving(hostile_ckpt) as url:
        policy = httpx.get(url + "/").headers["content-security-policy"]
        assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        tab, seen = opened(browser, url + "/")
        tab.wait_for_selector("#model:has-text('model:')")  # the policy allows no eval: wait by selectors
        assert HOSTILE_NAME in tab.text_content("#model")
        tab.fill("#prompt", HOSTILE_TEXT)
        tab.fill("#max_tokens", "20")
        tab.click("#go")
        tab.wait_for_selector("#go:not([disabled])")
        assert tab.text_content("#out").startswith(HOSTILE_TEXT)
        assert "unknown to the model" in tab.text_content("#status")  # < > / = ( ) are not in its corpus
        tab.click("#tab-score")
        tab.fill("#score-text", HOSTILE_TEXT)
        tab.click("#score-go")
        tab.wait_for_selector("#colored span[title]")
        tab.screenshot(path=str(tmp_path / "serve.png"))
        assert tab.evaluate("window.pwned") is None and tab.locator("#out img, #colored img, #model img").count() == 0
        assert seen == []
