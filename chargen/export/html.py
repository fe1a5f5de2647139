"""The HTML export: one self-contained page that writes with a character model in any browser, offline.

The page (chargen/export/page.html) holds the weights as float16, the vocabulary and what the model is
(`Exported.about`), and runs `CharLM.step` and the sampler in plain JavaScript. Its Content-Security-Policy
fetches nothing (`default-src 'none'`) and runs its one script by hash alone; every "<" of the inlined data
is written as \\u003c, so nothing in a checkpoint can close the script or run as markup.
"""

from __future__ import annotations

import base64
import os

import numpy as np

from chargen import pages
from chargen.config import MAX_STOP, MAX_TEMP
from chargen.errors import ChargenError
from chargen.export import Exported


def data(exported: Exported) -> dict:
    """What the page's script reads: the model's settings, vocabulary and weights (float16, little-endian,
    one after another in `tensors`' order, base64)."""
    model, tok = exported.model, exported.checkpoint.tokenizer
    if tok.kind != "char":
        raise ChargenError(
            f"the page writes with character models; this one reads {tok.kind} subwords, whose tokenizer the page "
            "cannot hold: export it with --onnx, or train a character model (chargen train FILE)"
        )
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    half = {k: v.astype("<f2") for k, v in weights.items()}
    if not all(np.isfinite(v).all() for v in half.values()):
        raise ChargenError("the model has weights too large for float16 (over 65,504): the page cannot hold them")
    return {
        "about": exported.about(),
        "model": model.config.to_dict(),
        "chars": tok.chars,
        "banned": tok.banned_ids(),
        "limits": {"temp": MAX_TEMP, "stop": MAX_STOP},
        "tensors": [[k, list(v.shape)] for k, v in half.items()],
        "weights": base64.b64encode(b"".join(v.tobytes() for v in half.values())).decode(),
    }


def render(exported: Exported) -> str:
    """The page: the template with the data inlined and its policy locked to its script."""
    return pages.filled(__package__, data(exported))


def write(exported: Exported, path: str | os.PathLike) -> int:
    """Write the page to `path` atomically; its size in bytes."""
    from chargen.files import atomic_write

    page = render(exported).encode()
    with atomic_write(path) as f:
        f.write(page)
    return len(page)
