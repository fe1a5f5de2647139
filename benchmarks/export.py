"""chargen export, measured: parity, page size, the page's speed in headless Chromium, onnxruntime beside chargen.

    python benchmarks/export.py                     # the bundled model; benchmarks/out/export.json
    python benchmarks/export.py -c checkpoints/novel/best.pt
    python benchmarks/export.py --screenshot docs/export/page.png      # and the README's picture

Parity: the logits after each of 1,000 characters of tiny shakespeare's validation text, from
the page (`chargen.logits` in Chromium) and from onnxruntime, against `CharLM.step` in float32
(the page's against the model with its weights rounded to float16, as the page holds them; the
bundled model's weights are float16 already). The page: its size; the median time from a click
on Write to the first character shown; its chars/s writing 2,000 characters after "ROMEO:"
(medians of 3); and whether a seed writes what its earlier run wrote. onnxruntime: one stream,
2,000 steps of the README's loop (sampling in numpy), with one thread and with its default; and
chargen's own one-stream sampler on the same model, as `benchmarks/bench.py --only sampling`
measures it (with torch's 2 threads, and with 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench import ROOT, cpu_name, write_rate

from chargen.export import Exported, html
from chargen.export import onnx as onnx_export
from chargen.generate import Generator

PARITY_CHARS, WRITE_CHARS = 1000, 2000


def step_logits(model, ids: np.ndarray) -> np.ndarray:
    """(T, V) logits of `CharLM.step` after each id, from a fresh state."""
    state, out = model.initial_state(1), []
    with torch.inference_mode():
        for i in torch.from_numpy(ids.astype(np.int64)):
            logits, state = model.step(i[None], state)
            out.append(logits[0].numpy())
    return np.array(out)


def page_figures(page: Path, text: str, want: np.ndarray) -> dict:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    version = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout.strip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab, requests = browser.new_page(), []
        tab.on("request", lambda r: requests.append(r.url))
        t0 = time.perf_counter()
        tab.goto(page.as_uri())
        tab.wait_for_selector("#status[data-state=ready]", timeout=60_000)
        ready = time.perf_counter() - t0
        kernel = tab.get_attribute("#status", "data-kernel")
        got = np.array(tab.evaluate("(text) => chargen.logits(text)", text))

        def write(seed: int, length: int) -> tuple[str, dict]:
            tab.fill("#prime", "ROMEO:")
            tab.fill("#seed", str(seed))
            tab.fill("#length", str(length))
            tab.click("#write")
            tab.wait_for_selector("#status[data-state=done]", timeout=120_000)
            board = tab.evaluate("() => ({ ...document.querySelector('#status').dataset })")
            return tab.text_content("#out"), board

        runs = [write(seed, WRITE_CHARS) for seed in (1, 2, 3)]
        firsts = [float(write(seed, 20)[1]["firstMs"]) for seed in range(4, 13)]
        again = write(1, WRITE_CHARS)[0] == runs[0][0]
        tab = browser.new_page()  # the same page with its plain JavaScript kernel
        tab.goto(page.as_uri() + "#javascript")
        tab.wait_for_selector("#status[data-state=ready]", timeout=60_000)
        plain = [write(seed, WRITE_CHARS // 4)[1] for seed in (1, 2, 3)]
        browser.close()
    return {
        "browser": version,
        "page_bytes": page.stat().st_size,
        "open_to_ready_s": round(ready, 2),
        "requests": requests,
        "page_logits_max_abs_diff": float(np.abs(got - want).max()),
        "page_chars_per_s": round(statistics.median(int(b["chars"]) / float(b["seconds"]) for _, b in runs)),
        "page_first_char_ms": round(statistics.median(firsts), 1),
        "page_same_seed_same_text": again,
        "page_kernel": kernel,
        "page_javascript_chars_per_s": round(statistics.median(int(b["chars"]) / float(b["seconds"]) for b in plain)),
    }


def stepper(session):
    """The README's `step`: one id in, the logits out, the state carried inside."""
    names = [i.name for i in session.get_inputs()][1:]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["chargen.model"])
    state = {n: np.zeros((meta["layers"], 1, meta["hidden"]), np.float32) for n in names}

    def step(token: int) -> np.ndarray:
        logits, *after = session.run(None, {"ids": np.array([token]), **state})
        state.update(zip(names, after))
        return logits[0]

    return step


def screenshot(page: Path, path: Path) -> None:
    """The README's picture: the page after writing 600 characters after "ROMEO:" with seed 1."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1000, "height": 820})
        tab.goto(page.as_uri())
        tab.wait_for_selector("#status[data-state=ready]", timeout=60_000)
        tab.fill("#prime", "ROMEO:")
        tab.fill("#seed", "1")
        tab.fill("#length", "600")
        tab.click("#write")
        tab.wait_for_selector("#status[data-state=done]", timeout=60_000)
        path.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(path))
        browser.close()


def ort_figures(path: Path, text: str, ids: np.ndarray, want: np.ndarray) -> dict:
    import onnxruntime as ort

    figures = {"onnxruntime": ort.__version__}
    for threads in (1, 0):  # 0: onnxruntime's default
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        step = stepper(ort.InferenceSession(str(path), options))

        if threads == 1:
            got = np.array([step(int(i)) for i in ids])
            figures["onnx_logits_max_abs_diff"] = float(np.abs(got - want).max())
        rng, logits = np.random.default_rng(1), step(int(ids[-1]))
        t0 = time.perf_counter()
        for _ in range(WRITE_CHARS):
            logits[0] = -np.inf
            p = np.exp((logits - logits.max()) / 0.8)
            logits = step(int(rng.choice(len(p), p=p / p.sum())))
        figures[f"onnx_chars_per_s_{threads or 'default'}_threads"] = round(WRITE_CHARS / (time.perf_counter() - t0))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--checkpoint", default="shakespeare")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "export.json"))
    ap.add_argument("--screenshot", default=None, help="also save the page, writing, as this PNG")
    args = ap.parse_args()
    torch.set_num_threads(2)

    exported = Exported.load(args.checkpoint)
    model, tok = exported.model, exported.checkpoint.tokenizer
    corpus = (ROOT / "corpora" / "tinyshakespeare.txt").read_text()
    text = corpus[len(corpus) * 9 // 10 :][:PARITY_CHARS]  # the validation part
    ids = tok.encode(text)
    want = step_logits(model, ids)
    half = {k: v.half().float() for k, v in model.state_dict().items()}
    rounded = max(float((half[k] - v).abs().max()) for k, v in model.state_dict().items())
    model.load_state_dict(half)
    want_half = step_logits(model, ids)
    result = {
        "checkpoint": exported.checkpoint.describe(),
        "cpu": cpu_name(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "weights_changed_by_float16": rounded,
    }
    with tempfile.TemporaryDirectory() as folder:
        page, graph = Path(folder) / "model.html", Path(folder) / "model.onnx"
        html.write(exported, page)
        exported = Exported.load(args.checkpoint)  # the weights as read, for the ONNX file
        onnx_export.write(exported, graph)
        result["onnx_bytes"] = graph.stat().st_size
        result.update(page_figures(page, text, want_half))
        if args.screenshot:
            screenshot(page, Path(args.screenshot))
        result.update(ort_figures(graph, text, ids, want))
    gen = Generator(exported.model, tok, "cpu")
    with torch.inference_mode():
        write_rate(gen, 1)  # warm-up
        result["chargen_one_stream_chars_per_s"] = round(statistics.median(write_rate(gen, 1) for _ in range(3)))
        torch.set_num_threads(1)
        result["chargen_one_stream_1_thread"] = round(statistics.median(write_rate(gen, 1) for _ in range(3)))
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
