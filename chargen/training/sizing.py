"""Choosing the model a run can afford: size, batch, lr and regularisers from the budget, the corpus and the speed.

`chargen train` with no size flags (`--size auto`, the default) asks three questions before
its first step: how many characters can this run read (the budget; for a time budget, the
budget times the speed of each candidate model, measured with a few real training steps on
this device), how big is the corpus, and which candidate reached the lowest validation loss
after reading that many characters in the sweep that fitted `sizing.json` (benchmarks/sizing.py
trains a ladder of sizes for a few budgets on three corpora). The regularisers follow the epochs
the run will read (none for a pass or two; locked dropout, weight drop, embedding drop, AR/TAR
and a weight average for tens of passes), so a budget is spent training, and a run of many epochs
keeps `patience` on as a safety net. Flags a person gives are kept: the candidates are the
ladder with those flags laid over it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources

EVAL_SHARE = 0.05  # of a timed run's clock spent on validation and checkpoints, not on reading
MEASURE_SHARE = 0.05  # of a time budget that timing candidates may take: no more candidates are tried after it
# (up to this many epochs, the regularisers a run of that many passes gets). Up to 2 epochs none: a 2x384 reading 1.8
# epochs reached 1.510 with no dropout and 1.535 with 0.1. Up to 6, plain dropout 0.1 (at 6 epochs 0.1 beat 0.25;
# 5 minutes of tiny shakespeare, 3.3 epochs, reached 1.502 with locked dropout, weight drop 0.2 and the average, whose
# second validation pass took time from training). Up to 16, plain dropout 0.2 (20 minutes, 11 epochs, reached
# 1.476 with locked dropout 0.2, weight drop 0.3, embedding drop 0.05 and the average, against 1.4385 for plain
# 0.2 earlier). Past 16 all of them: on a 30,000-character text read 90 times, each alone took 0.03-0.05 off the
# 2015 recipe's 1.936 and together 0.06, still improving at the end instead of overfitting from epoch 20; AR 2 and
# TAR 1 took 0.019 more at 56 epochs (benchmarks/recipe.py, RESULTS.md "The regularised recipe").
REGULARISE = (
    (2, {"dropout": 0.0}),
    (6, {"dropout": 0.1}),
    (16, {"dropout": 0.2}),
    (
        math.inf,
        {
            "dropout": 0.3,
            "locked": True,
            "weight_drop": 0.5,
            "embed_drop": 0.1,
            "average": 0.999,
            "ar": 2.0,
            "tar": 1.0,
        },
    ),
)
PATIENCE_EPOCHS = 16  # a run that will read the corpus more often than this stops when it stops improving
PATIENCE = 4  # evaluations without a better validation loss


@dataclass(frozen=True)
class Candidate:
    """One rung of the ladder: a model and the batch it trains with on its kind of device."""

    name: str
    device: str  # "cpu" or "gpu"
    layers: int
    hidden: int
    embed: int
    batch_size: int
    seq_len: int
    lr: float

    def flags(self) -> dict[str, str]:
        """The `chargen train` flags that train exactly this candidate."""
        return {
            "layers": str(self.layers),
            "hidden": str(self.hidden),
            "embed": str(self.embed),
            "batch-size": str(self.batch_size),
            "seq-len": str(self.seq_len),
            "lr": f"{self.lr:g}",
        }


def table() -> dict:
    """The ladder of candidates and the sweep's points, as checked in beside this module."""
    return json.loads(resources.files(__package__).joinpath("sizing.json").read_text())


def ladder(device: str, tab: dict | None = None) -> list[Candidate]:
    return [Candidate(**c) for c in (tab or table())["ladder"] if c["device"] == device]


def candidate(name: str, device: str) -> Candidate:
    return next(c for c in ladder(device) if c.name == name)


def readable(chars_per_sec: float, seconds: float) -> float:
    """Characters a timed run reads: its clock, less what validation and checkpoints take."""
    return chars_per_sec * seconds * (1 - EVAL_SHARE)


def regularisers_for(epochs: float) -> dict:
    """More passes over the same text need more regularisation to keep from learning it by heart."""
    return dict(next(settings for limit, settings in REGULARISE if epochs <= limit))


def guarded(chosen: dict, given: dict, epochs: float) -> dict:
    """`chosen` with the regularisers for a run of `epochs` epochs, and the patience of one so long it could
    overfit, where `given` does not set them."""
    chosen.update({k: v for k, v in regularisers_for(epochs).items() if k not in given})
    if "patience" not in given and epochs > PATIENCE_EPOCHS:
        chosen["patience"] = PATIENCE
    return chosen


def budget_reads(settings: dict, chars_per_token: float, corpus_chars: int, steps, epochs) -> list[float]:
    """The characters a run of `settings` may read under its step and epoch budgets (inf with neither); a time
    budget's, which needs a measured speed, the caller adds."""
    reads = [math.inf]
    if steps:
        reads.append(steps * settings["batch_size"] * settings["seq_len"] * chars_per_token)
    if epochs:
        reads.append(epochs * corpus_chars)
    return reads


@dataclass
class Choice:
    """What `choose` settled on: the settings it sets, and why, in words for the person and for `info`."""

    settings: dict
    why: str
    measured_s: float = 0.0  # seconds of the budget spent timing candidates
    rate: float | None = None  # the chars/s timed for the chosen model (a time budget only)


class Curves:
    """Validation loss against characters read, per rung, from the sweep's points for one device kind."""

    def __init__(self, points: list[dict], every: list[dict] | None = None) -> None:
        self.points = points
        # a rung with one point falls below it as the median rung of the whole table does (nats per e-fold)
        every = every or points
        groups = {(p["device"], p["corpus"]) for p in every}
        slopes = sorted(
            s
            for g in groups
            for rows in self._by_rung([p for p in every if (p["device"], p["corpus"]) == g]).values()
            for s in _slopes(rows)[:1]
            if s < 0
        )
        self.slope = slopes[len(slopes) // 2] if slopes else -0.1

    @staticmethod
    def _by_rung(points: list[dict]) -> dict[str, list[tuple[float, float]]]:
        rungs: dict[str, dict[float, float]] = {}
        for p in points:  # of two runs that read as much, the better one
            at = rungs.setdefault(p["candidate"], {})
            x = math.log(p["chars"])
            at[x] = min(at.get(x, math.inf), p["val"])
        return {k: sorted(v.items()) for k, v in rungs.items()}

    def reference(self, corpus_chars: int) -> str | None:
        """The sweep's corpus nearest in size to this one (on a log scale)."""
        sizes = {p["corpus"]: p["corpus_chars"] for p in self.points}
        return min(sizes, key=lambda k: abs(math.log(sizes[k] / corpus_chars)), default=None)

    def predict(self, rung: str, chars: float, corpus_chars: int) -> float | None:
        """The loss the sweep saw for `rung` after reading `chars` on the corpus most like this one: interpolated
        on a log scale between its points, falling as the first points fall below them, and flat beyond the last."""
        ref = self.reference(corpus_chars)
        rows = self._by_rung([p for p in self.points if p["corpus"] == ref]).get(rung)
        if not rows:
            return None
        x = math.log(max(chars, 1.0))
        if x >= rows[-1][0]:
            return rows[-1][1]
        if x <= rows[0][0]:
            first = _slopes(rows)[:1]
            slope = first[0] if first and first[0] < 0 else self.slope
            return rows[0][1] + slope * (x - rows[0][0])
        for (x0, y0), (x1, y1) in zip(rows, rows[1:]):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        raise AssertionError("unreachable: x lies between the first and last points")


def _slopes(rows: list[tuple[float, float]]) -> list[float]:
    return [(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in zip(rows, rows[1:]) if x1 > x0]


MODEL_KEYS = ("layers", "hidden", "embed")
TRAIN_KEYS = ("batch_size", "seq_len", "lr")
SIZE_KEYS = ("layers", "hidden")  # given both, the run trains exactly what was asked: nothing is measured


def settings_of(rung: Candidate) -> dict:
    return {k: getattr(rung, k) for k in (*MODEL_KEYS, *TRAIN_KEYS)}


def kind_of(device_type: str) -> str:
    return "gpu" if device_type == "cuda" else "cpu"


def choose(
    given: dict,
    *,
    corpus_chars: int,
    chars_per_token: float,
    device_type: str,
    steps: int | None,
    epochs: float | None,
    time: float | None,
    speed,
    clock=None,
    tab: dict | None = None,
) -> Choice | None:
    """The settings that `given` leaves open, chosen as the module's docstring says; None when nothing is left
    to choose (both size flags given) or the table knows nothing of this kind of device.

    `speed(settings)` returns the chars/s of a few real training steps of the model and batch that
    `settings` describe (called only for a time budget); `clock` times those measurements; `tab`
    stands in for the checked-in table."""
    import time as _time

    clock = clock or _time.perf_counter
    if all(k in given for k in SIZE_KEYS):
        return None
    kind = kind_of(device_type)
    tab = tab or table()
    curves = Curves([p for p in tab["points"] if p["device"] == kind], tab["points"])
    rungs = [c for c in ladder(kind, tab) if curves.predict(c.name, 1.0, corpus_chars) is not None]
    if not rungs:
        return None
    started, options, best = clock(), [], None
    for rung in rungs:  # smallest first: stop once a bigger model is predicted to do worse than a smaller one
        settings = settings_of(rung) | {k: v for k, v in given.items() if k in MODEL_KEYS + TRAIN_KEYS}
        if any(o["settings"] == settings for o in options):
            continue
        reads = budget_reads(settings, chars_per_token, corpus_chars, steps, epochs)
        rate = None
        if time:
            if options and clock() - started > MEASURE_SHARE * time:
                break
            rate = speed(settings)
            reads.append(readable(rate, max(0.0, time - (clock() - started))))
        budget = chars = min(reads)  # a budget is spent: the regularisers, not an epoch cap, keep it from overfitting
        predicted = curves.predict(rung.name, chars, corpus_chars)
        options.append({"settings": settings, "budget": budget, "chars": chars, "rate": rate, "predicted": predicted})
        if best is not None and predicted > best["predicted"]:
            break
        best = options[-1] if best is None or predicted < best["predicted"] else best
    if best is None:
        return None
    chosen = guarded(dict(best["settings"]), given, best["chars"] / corpus_chars)
    spent = clock() - started
    why = _why(chosen, best, options, corpus_chars, device_type, time)
    if time:
        first, _, rest = why.partition("\n")
        why = "\n".join(filter(None, [f"{first} (timing took {spent:.1f}s of the budget)", rest]))
    return Choice(chosen, why, spent, best["rate"])


def around_shape(
    given: dict,
    *,
    layers: int,
    hidden: int,
    corpus_chars: int,
    chars_per_token: float,
    device_type: str,
    steps: int | None,
    epochs: float | None,
    time: float | None,
    speed,
) -> Choice:
    """What `--size auto` chooses for a run whose shape is settled: both size flags given, or a fine-tuned run's,
    which is its parent's. The batch and lr of the ladder's rung of that shape on this kind of device (the defaults
    when none is), as a run from scratch of that size trains (for fine-tuning, a gentler lr learnt less:
    benchmarks/RESULTS.md, "Fine-tuning"), and the regularisers and patience for the epochs the budget reads (for
    a time budget, at the speed `speed(settings)` measures)."""
    import time as _time

    from chargen.config import TrainConfig

    rung = next((c for c in ladder(kind_of(device_type)) if (c.layers, c.hidden) == (layers, hidden)), None)
    batch = {k: getattr(rung or TrainConfig(), k) for k in ("batch_size", "seq_len", "lr")}
    chosen = {k: v for k, v in batch.items() if k not in given}
    settings = {**batch, **{k: v for k, v in given.items() if k in MODEL_KEYS + TRAIN_KEYS}}
    rate, started = None, _time.perf_counter()
    reads = budget_reads(settings, chars_per_token, corpus_chars, steps, epochs)
    if time:
        rate = speed(settings)
        reads.append(readable(rate, time))
    run_epochs = min(reads) / corpus_chars
    chosen = guarded(chosen, given, run_epochs)
    spent = _time.perf_counter() - started
    why = f"batch {settings['batch_size']} x {settings['seq_len']}, lr {settings['lr']:g}" + _also_regularised(chosen)
    reads_as = f"this {device_type.upper()} trains it at ~{_short(rate)} chars/s, so" if rate else "the budget is"
    why += f": {reads_as} ~{_short(min(reads))} characters, {run_epochs:.1f} epochs of this corpus"
    return Choice(chosen, why, spent, rate)


def _why(chosen: dict, best: dict, options: list[dict], corpus_chars: int, device_type: str, time) -> str:
    """One or two lines: what was chosen, what it will read, and what the sweep predicts for it and the others."""
    from chargen.config import format_duration

    c = chosen
    head = f"{c['layers']}x{c['hidden']}, batch {c['batch_size']} x {c['seq_len']}" + _also_regularised(c)
    reads = "the budget is"
    if best["rate"] is not None:
        rate = _short(best["rate"])
        reads = f"this {device_type.upper()} trains it at ~{rate} chars/s, so {format_duration(time)} is"
    ranked = sorted(options, key=lambda o: o["predicted"])
    predicted = "; the sizing sweep predicts " + ", ".join(
        f"{o['predicted']:.3f}{' nats/char' if k == 0 else ''} for {'it' if o is best else _name(o['settings'])}"
        for k, o in enumerate(ranked)
    )
    epochs = best["budget"] / corpus_chars
    why = f"{head}: {reads} ~{_short(best['budget'])} characters, {epochs:.1f} epochs of this corpus{predicted}"
    if "patience" not in c:
        return why
    return f"{why}\nso many epochs could overfit: the run stops after {c['patience']} evaluations with no better loss"


def regularised(c: dict) -> str:
    """'dropout 0.3 (locked), weight drop 0.5, ...': the regularisers among the settings `c`, as `info` shows them."""
    said = [f"dropout {c['dropout']:g}{' (locked)' if c.get('locked') else ''}"] if "dropout" in c else []
    said += [f"weight drop {c['weight_drop']:g}"] if c.get("weight_drop") else []
    said += [f"embedding drop {c['embed_drop']:g}"] if c.get("embed_drop") else []
    said += [f"AR {c['ar']:g}"] if c.get("ar") else []
    said += [f"TAR {c['tar']:g}"] if c.get("tar") else []
    return ", ".join(said + ([f"weight average {c['average']:g}"] if c.get("average") else []))


def _also_regularised(c: dict) -> str:
    said = regularised(c)
    return f", {said}" if said else ""


def _name(settings: dict) -> str:
    return f"{settings['layers']}x{settings['hidden']}"


def _short(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"
