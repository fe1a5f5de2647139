"""Inside a model, on a text: surprisal, the cells and gates of every unit, and how far back gradients reach.

`report` reads a text through one or more checkpoints and returns the plain data that
`chargen inspect` inlines into one self-contained HTML page (chargen/inspect/page.html):

- surprisal: bits of every character and the model's top five guesses for it (`score.surprisal`);
- signals: the hidden state h of every unit of every layer, and for the most interesting units
  the cell state and the gates (LSTM: c, i, f, o; GRU: r, z, n), each quantised to a byte. The
  states come from the model's own one-step path (`CharLM.step`); the gates from the same
  weights applied to the inputs and states that path saw, and they rebuild its c and h exactly;
- interesting units: those whose activation best tracks a property of the text (inside quotes,
  position in the line, inside brackets, indentation), by correlation over the given text;
- saturation: per unit, the fraction of characters at which each gate is below 0.1 or above 0.9;
- look-back: the norm of the gradient of the loss at a character with respect to the input k
  characters before it, averaged over positions, for each checkpoint;
- training: the run's metrics (loss against step and time, learning rate).
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable

import numpy as np
import torch

from chargen import pages
from chargen.config import DEFAULT_DEVICE, INSPECT_CHARS, INSPECT_UNITS
from chargen.errors import ChargenError
from chargen.generate import Generator
from chargen.model import CharLM

CHARS, UNITS = INSPECT_CHARS, INSPECT_UNITS
LOOKBACK = 200  # the furthest distance of the gradient curve
POSITIONS = 32  # positions the gradient curve averages over
SATURATED = 0.1  # a gate below this, or above 1 minus this, is saturated
TRACKS = 0.3  # a unit is listed as tracking a property when |correlation| reaches this
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}  # sigmoid gates, in [0, 1]
EXTRA = {"lstm": ("c", "i", "f", "o"), "gru": ("r", "z", "n"), "rnn": ()}  # signals beyond h


Signals = dict[str, list[np.ndarray]]  # each signal's float arrays (T, hidden), one per layer, by name


@torch.inference_mode()
def signals(model: CharLM, ids: torch.Tensor) -> Signals:
    """h (and c) of every layer after each token of `ids` (1-D, read from a fresh state), from `model.step`,
    and the gates that produced them, from the layer's weights."""
    model.eval()
    cell, layers = model.config.cell, model.config.layers
    state = model.initial_state(1, ids.device)
    hs, cs = [], []
    for t in range(len(ids)):
        _, state = model.step(ids[t : t + 1], state)
        hs.append(state[0][:, 0])  # (layers, H)
        if cell == "lstm":
            cs.append(state[1][:, 0])
    h = torch.stack(hs, 1)  # (layers, T, H)
    values: Signals = {"h": [h[k].float().cpu().numpy() for k in range(layers)]}
    if cell == "lstm":
        c = torch.stack(cs, 1)
        values["c"] = [c[k].float().cpu().numpy() for k in range(layers)]
    x = model.embed(ids)  # (T, E): what layer 0 read
    for k in range(layers):
        before = torch.cat([torch.zeros_like(h[k][:1]), h[k][:-1]])  # the state each step started from
        for name, g in gates(model, k, x, before).items():
            values.setdefault(name, []).append(g.float().cpu().numpy())
        x = h[k]  # what the next layer read
    return values


def gates(model: CharLM, layer: int, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gates of `layer` (T, H each) for inputs x (T, in) and the states h (T, H) each step started from,
    in PyTorch's own order and equations for nn.LSTM and nn.GRU (see their documentation)."""
    w_ih, w_hh, b_ih, b_hh = model.rnn.all_weights[layer]
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    cell = model.config.cell
    if cell == "lstm":
        i, f, _, o = (gi + gh).chunk(4, -1)
        return {"i": i.sigmoid(), "f": f.sigmoid(), "o": o.sigmoid()}
    if cell == "gru":
        ir, iz, i_n = gi.chunk(3, -1)
        hr, hz, h_n = gh.chunk(3, -1)
        r = (ir + hr).sigmoid()
        return {"r": r, "z": (iz + hz).sigmoid(), "n": (i_n + r * h_n).tanh()}
    return {}


def features(text: str) -> dict[str, np.ndarray]:
    """Properties of each character of `text` that a unit may track."""
    n = len(text)
    quote, column, depth, indent, word = (np.zeros(n) for _ in range(5))
    opened, col, level, lead, leading, letters = "", 0, 0, 0, True, 0  # opened: the quote a string began with
    for t, ch in enumerate(text):
        letters = letters + 1 if ch.isalnum() else 0
        apostrophe = ch == "'" and opened != "'" and t > 0 and text[t - 1].isalpha()  # it's, o'er
        if ch in "\"'" and not apostrophe:
            opened = "" if opened == ch else opened or ch
        if ch == "\n":
            col, lead, leading = 0, 0, True
        else:
            col += 1
            if leading and ch == " ":
                lead += 1
            else:
                leading = False
        if ch in "([{":
            level += 1
        elif ch in ")]}":
            level = max(0, level - 1)
        quote[t], column[t], depth[t], indent[t], word[t] = bool(opened), col, level, lead, letters
    lines = text.split("\n")
    ends = [line.endswith(":") for line in lines]  # a speaker's name, a block's header
    header = np.repeat(np.array(ends, float), [len(line) + 1 for line in lines])[:n]
    return {
        "inside quotes": quote,
        "position in line": column,
        "inside brackets": (depth > 0).astype(float),
        "indentation": indent,
        "position in word": word,
        "line ending in a colon": header,
    }


def interesting(values: list[np.ndarray], feats: dict[str, np.ndarray], top: int = 5) -> list[dict]:
    """For each feature, the units (layer, unit) whose activation correlates most with it (|r| >= TRACKS), best
    first."""
    found = []
    for name, f in feats.items():
        if f.std() == 0:
            continue
        fz = (f - f.mean()) / f.std()
        scored = []
        for layer, a in enumerate(values):
            sd = a.std(0)
            corr = ((a - a.mean(0)) * fz[:, None]).mean(0) / np.where(sd > 0, sd, np.inf)
            scored += [(abs(r), layer, u, r) for u, r in enumerate(corr)]
        scored.sort(reverse=True)
        found += [
            {"feature": name, "layer": layer, "unit": u, "corr": round(float(r), 3)}
            for size, layer, u, r in scored[:top]
            if size >= TRACKS
        ]
    return found


def saturation(sig: Signals, cell: str) -> list[dict]:
    """Per layer and sigmoid gate: each unit's fraction of characters below SATURATED and above 1 - SATURATED."""
    out = []
    for name in GATES[cell]:
        for layer, g in enumerate(sig[name]):
            left, right = (g < SATURATED).mean(0), (g > 1 - SATURATED).mean(0)
            out.append({"gate": name, "layer": layer, "left": _rounded(left), "right": _rounded(right)})
    return out


def lookback(model: CharLM, ids: torch.Tensor, furthest: int = LOOKBACK, positions: int = POSITIONS) -> list[float]:
    """Mean norm of d(loss at a character) / d(embedded input k characters before it), for k = 0..furthest,
    over `positions` windows of the text each read from a fresh state. Runs on a copy: the model itself
    may be serving other requests, and a hook on it would reach theirs."""
    model = copy.deepcopy(model).float().eval()
    span = min(furthest + 1, len(ids) - 1)
    starts = np.linspace(0, len(ids) - span - 1, min(positions, len(ids) - span)).astype(int)
    x = torch.stack([ids[s : s + span] for s in starts])  # (P, span)
    y = torch.stack([ids[s + span] for s in starts])  # (P,): the character after each window
    seen: list[torch.Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        seen.append(out)

    hook = model.embed.register_forward_hook(keep)
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):  # cuDNN's backward wants train mode
            logits, _ = model(x)
            torch.nn.functional.cross_entropy(logits[:, -1].float(), y, reduction="sum").backward()
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    norms = seen[0].grad.norm(dim=-1).mean(0)  # (span,): position span-1 is distance 0
    return [float(f"{v:.4g}") for v in norms.flip(0).tolist()]  # four significant digits, however small


def load(paths: list[str | os.PathLike], device: str = DEFAULT_DEVICE) -> list[Generator]:
    if not paths:
        raise ChargenError("give a checkpoint with -c")
    return [Generator.load(p, device) for p in paths]


def maker(gen: Generator) -> Callable[[str, int], str]:
    """The inspect page of a text's first `chars` characters under `gen`: what `chargen serve` offers."""
    return lambda text, chars: render(report([gen], text, chars=chars))


def report(gens: list[Generator], text: str, chars: int = CHARS, units: int = UNITS) -> dict:
    """The page's data for `text` (its first `chars` characters) under the first model of `gens`; the
    look-back curve for each of them."""
    gen = gens[0]
    if gen.tokenizer.kind != "char":
        raise ChargenError("inspect reads a character model; this one has subword pieces")
    text = text[:chars]
    if len(text) < 2:
        raise ChargenError("the text is too short to inspect: give at least two characters")
    ids = _ids(gen, text)
    cell = gen.model.config.cell
    sig = signals(gen.model, ids)
    feats = features(text)
    ranked = interesting(sig["c" if cell == "lstm" else "h"], feats)
    from chargen.score import surprisal

    scored = surprisal(gen, text)
    return {
        "model": {
            "name": gen.checkpoint.describe() if gen.checkpoint else gen.describe(),
            "cell": cell,
            "layers": gen.model.config.layers,
            "hidden": gen.model.config.hidden,
            "checkpoint": str(gen.checkpoint.path) if gen.checkpoint else None,
        },
        "text": text,
        "surprisal": {
            "bits": [c["bits"] for c in scored["chars"]],
            "top": [c["top"] for c in scored["chars"]],
            "rank": [c["rank"] for c in scored["chars"]],
            "total_bits": scored["total_bits"],
            "mean_bits": scored["mean_bits"],
        },
        "signals": _inlined(sig, cell, ranked, units),
        "interesting": ranked,
        "saturation": saturation(sig, cell),
        "lookback": [{"name": _name(g), "norms": lookback(g.model, _ids(g, text))} for g in gens],
        "training": [
            {k: r.get(k) for k in ("step", "elapsed_s", "train_loss", "val_loss", "lr")}
            for r in (gen.checkpoint.metrics if gen.checkpoint else [])
        ],
    }


def _name(gen: Generator) -> str:
    where = gen.checkpoint.path if gen.checkpoint else None
    return f"{gen.model.config.summary()} ({where.parent.name}/{where.name})" if where else gen.model.config.summary()


def _ids(gen: Generator, text: str) -> torch.Tensor:
    return torch.as_tensor(gen.tokenizer.encode(text).astype("int64"), device=gen.device)


def _inlined(sig: Signals, cell: str, ranked: list[dict], units: int) -> dict:
    """Each signal as bytes (base64), with the range that maps 0..255 back to values: h for every unit, the
    others for the ranked units first, then those whose h varies most, up to `units` per layer."""
    h = sig["h"]
    chosen = []
    for layer, a in enumerate(h):
        picked = [r["unit"] for r in ranked if r["layer"] == layer]
        picked += [int(u) for u in np.argsort(-a.std(0))]
        chosen.append(list(dict.fromkeys(picked))[:units])
    out = {"h": {"units": None, "layers": [_quantised(a) for a in h]}}
    for name in EXTRA[cell]:
        out[name] = {"units": chosen, "layers": [_quantised(a[:, u]) for a, u in zip(sig[name], chosen)]}
    return out


def _quantised(a: np.ndarray) -> dict:
    """(T, U) floats as bytes, row by row, with the range they span: value = lo + byte / 255 * (hi - lo)."""
    lo, hi = float(a.min()), float(a.max())
    q = np.zeros(a.shape, np.uint8) if hi == lo else np.rint((a - lo) / (hi - lo) * 255).astype(np.uint8)
    return {"lo": lo, "hi": hi, "units": int(a.shape[1]), "data": base64.b64encode(q.tobytes()).decode()}


def _rounded(a: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in a]


def render(data: dict) -> str:
    """The self-contained page: the template with the data inlined (no other file, no network; `pages.filled`)."""
    return pages.filled(__package__, data)


def mib(page: str) -> float:
    return len(page.encode()) / 2**20
