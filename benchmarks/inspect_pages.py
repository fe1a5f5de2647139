"""The README's inspect figures: a page per model, a screenshot of each view, and what the views found.

    python benchmarks/inspect_pages.py NAME TEXT CKPT [CKPT ...]
    python benchmarks/inspect_pages.py shakespeare corpora/tinyshakespeare.txt shakespeare

Writes docs/inspect/NAME.html (not committed: it is large) and docs/inspect/NAME-VIEW.png (what the README
shows), and prints the units that track the text best and the look-back figures of each checkpoint.
The text read is the last 5,000 characters of TEXT: the end of the corpus, which the models held
out for validation. Screenshots come from Debian's chromium, driven as tests/test_inspect.py drives it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from chargen.inspect import page as inspect

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "inspect"
VIEWS = ("surprisal", "cells", "span", "saturation", "lookback", "training")


def main() -> None:
    name, text_path, *paths = sys.argv[1:]
    text = Path(text_path).read_text(encoding="utf-8")[-inspect.CHARS :]
    data = inspect.report(inspect.load(paths), text)
    OUT.mkdir(parents=True, exist_ok=True)
    page = OUT / f"{name}.html"
    page.write_text(inspect.render(data), encoding="utf-8")
    print(f"{page}: {inspect.mib(page.read_text()):.1f} MiB; {data['surprisal']['mean_bits']:.3f} bits/char")
    for r in data["interesting"]:
        print(f"  {r['feature']:<24} layer {r['layer']} unit {r['unit']:>3}  r = {r['corr']:+.2f}")
    for curve in data["lookback"]:
        n = curve["norms"]
        ratios = ", ".join(f"k={k} {n[k] / n[0]:.2e}" for k in (10, 50, 100))
        print(f"  look-back {curve['name']}: {ratios} of k=0")
    shoot(page, name)


def shoot(page: Path, name: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        tab = browser.new_context(offline=True, viewport={"width": 1100, "height": 640}).new_page()
        tab.goto(page.as_uri())
        for view in VIEWS:
            tab.click(f"nav button[data-view={view}]")
            if view == "span":  # a span to search for: the first line that starts a speech, or a def
                tab.evaluate(
                    """() => { const t = document.getElementById('span-text'), s = t.querySelectorAll('span');
                    const text = Array.from(s, (x) => x.textContent).join('');
                    let at = text.search(/\\n\\s*def |:\\n/); if (at < 0) at = 0;
                    const r = document.createRange();
                    r.setStart(s[at + 1].firstChild, 0); r.setEnd(s[at + 12].firstChild, 1);
                    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(r);
                    t.dispatchEvent(new MouseEvent('mouseup', {bubbles: true})); sel.removeAllRanges(); }"""
                )
            tab.screenshot(path=str(OUT / f"{name}-{view}.png"))
        browser.close()
    print(f"  screenshots: {OUT}/{name}-*.png")


if __name__ == "__main__":
    main()
