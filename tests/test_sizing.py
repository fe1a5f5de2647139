"""--size auto: the rule on fake speeds and a made-up table, the checked-in table against its own sweep, the CLI."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from chargen.config import parse_duration
from chargen.training import sizing

BIG_CORPUS, SMALL_CORPUS = 1_000_000, 100_000


def rung(name: str, layers: int, hidden: int, device: str = "cpu", batch: int = 16) -> dict:
    return dict(name=name, device=device, layers=layers, hidden=hidden, embed=32, batch_size=batch, seq_len=64, lr=4e-3)


def point(corpus: str, size: int, name: str, chars: float, val: float, device: str = "cpu") -> dict:
    return dict(device=device, corpus=corpus, corpus_chars=size, candidate=name, chars=chars, val=val)


# Bigger models are worse early and better late on the big corpus; on the small one the big model overfits.
TABLE = {
    "ladder": [rung("small", 2, 32), rung("mid", 2, 64), rung("big", 2, 128), rung("gpu", 2, 512, "gpu", 128)],
    "points": [
        *(point("big", BIG_CORPUS, "small", c, v) for c, v in ((1e5, 2.0), (1e6, 1.8), (1e7, 1.75))),
        *(point("big", BIG_CORPUS, "mid", c, v) for c, v in ((1e5, 2.2), (1e6, 1.7), (1e7, 1.55))),
        *(point("big", BIG_CORPUS, "big", c, v) for c, v in ((1e5, 2.5), (1e6, 1.75), (1e7, 1.45))),
        *(point("small", SMALL_CORPUS, n, 1e6, v) for n, v in (("small", 1.9), ("mid", 2.0), ("big", 2.1))),
        point("big", BIG_CORPUS, "gpu", 1e8, 1.3, "gpu"),
    ],
}
FAST = {32: 1e6, 64: 5e5, 128: 2.5e5, 512: 1e7}  # chars/s by hidden size
SLOW = {32: 1e3, 64: 3e2, 128: 1e2, 512: 1e4}


class Speeds:
    """A fake device: chars/s by hidden size, and a record of what was timed."""

    def __init__(self, rates: dict[int, float]) -> None:
        self.rates, self.timed = rates, []

    def __call__(self, settings: dict) -> float:
        self.timed.append(dict(settings))
        return self.rates[settings["hidden"]]


def choose(given=None, *, rates=FAST, corpus=BIG_CORPUS, time=300.0, steps=None, epochs=None, device="cpu"):
    speed = Speeds(rates)
    choice = sizing.choose(
        given or {},
        corpus_chars=corpus,
        chars_per_token=1.0,
        device_type=device,
        steps=steps,
        epochs=epochs,
        time=time,
        speed=speed,
        tab=TABLE,
    )
    return choice, speed


def test_a_fast_device_gets_the_big_model_and_a_slow_one_the_small():
    fast, _ = choose(rates=FAST)
    slow, _ = choose(rates=SLOW)
    assert fast.settings["hidden"] == 128 and slow.settings["hidden"] == 32
    assert "predicts" in fast.why and "epochs of this corpus" in fast.why


def test_a_small_corpus_reads_the_small_corpus_curves_and_gets_the_regularisers_and_patience():
    large, _ = choose(rates=FAST, corpus=BIG_CORPUS * 1000)
    small, _ = choose(rates=FAST, corpus=SMALL_CORPUS)
    assert small.settings["hidden"] == 32  # the big model overfits a small text, as its points say
    many = sizing.REGULARISE[-1][1]  # 2,850 epochs' worth of time: spent, with every regulariser on
    assert all(small.settings[k] == v for k, v in many.items()) and small.settings["patience"] == sizing.PATIENCE
    assert "epochs" not in small.settings  # no cap: a budget is spent training
    assert large.settings["dropout"] == 0.0 and "patience" not in large.settings  # a fraction of an epoch
    assert not any(large.settings.get(k) for k in ("locked", "weight_drop", "embed_drop", "average"))
    assert "overfit" in small.why and "weight drop 0.5" in small.why


def test_flags_given_are_kept_and_the_rest_chosen_around_them():
    choice, speed = choose({"hidden": 100, "lr": 1e-3, "batch_size": 8}, rates={100: 5e5})
    assert choice.settings["hidden"] == 100 and choice.settings["lr"] == 1e-3 and choice.settings["batch_size"] == 8
    assert all(s["hidden"] == 100 and s["batch_size"] == 8 for s in speed.timed)
    assert len(speed.timed) == 1  # the ladder collapsed to one candidate: timed once
    choice, _ = choose({"dropout": 0.25, "patience": 9}, rates=SLOW, corpus=SMALL_CORPUS)
    assert "dropout" not in choice.settings and "patience" not in choice.settings  # the person's own stay as given


def test_both_size_flags_given_measure_nothing():
    choice, speed = choose({"layers": 3, "hidden": 64})
    assert choice is None and speed.timed == []


def test_a_budget_of_steps_or_epochs_needs_no_timing():
    by_steps, speed = choose(time=None, steps=10_000)  # 10,000 x 16 x 64 = 1e7 characters
    assert speed.timed == [] and by_steps.settings["hidden"] == 128
    by_epochs, speed = choose(time=None, epochs=0.1)  # 1e5 characters: the small model is best that early
    assert speed.timed == [] and by_epochs.settings["hidden"] == 32


def test_the_time_spent_timing_counts_and_is_capped():
    now = [0.0]

    def clock() -> float:
        return now[0]

    def slow_to_time(settings: dict) -> float:
        now[0] += 20.0  # each candidate takes 20 s to time: over 5% of 300 s after the first
        return FAST[settings["hidden"]]

    choice = sizing.choose(
        {},
        corpus_chars=BIG_CORPUS,
        chars_per_token=1.0,
        device_type="cpu",
        steps=None,
        epochs=None,
        time=300.0,
        speed=slow_to_time,
        clock=clock,
        tab=TABLE,
    )
    assert choice.measured_s == 20.0 and choice.settings["hidden"] == 32  # only the first was timed


def test_a_gpu_reads_the_gpu_ladder():
    choice, speed = choose(device="cuda")
    assert choice.settings["hidden"] == 512 and choice.settings["batch_size"] == 128
    assert [s["hidden"] for s in speed.timed] == [512]


def test_the_curves_interpolate_on_a_log_scale_fall_below_and_stay_flat_beyond():
    curves = sizing.Curves(TABLE["points"])
    assert curves.predict("mid", math.sqrt(1e5 * 1e6), BIG_CORPUS) == pytest.approx(1.95)
    assert curves.predict("mid", 1e9, BIG_CORPUS) == 1.55
    below = curves.predict("mid", 1e4, BIG_CORPUS)
    assert below == pytest.approx(2.2 + (2.2 - 1.7))  # the first segment's slope, one decade further down
    assert curves.predict("nothing", 1e6, BIG_CORPUS) is None
    assert curves.reference(150_000) == "small" and curves.reference(5_000_000) == "big"


@pytest.mark.parametrize("corpus", ["shakespeare", "words", "tune"])
def test_the_rule_picks_the_sweeps_best_size_at_each_of_the_sweeps_budgets(corpus):
    """The checked-in table picks what its sweep found best on each corpus at each budget that tried more than one
    size, given the speed at which each size read what it read in that budget."""
    points = [p for p in sizing.table()["points"] if p["device"] == "cpu" and p["corpus"] == corpus]
    sizes = {b: {p["candidate"] for p in points if p["budget"] == b} for b in {p["budget"] for p in points}}
    budgets = [b for b, swept in sizes.items() if len(swept) > 1]
    assert budgets, f"the table has no budget of {corpus} at which two sizes were swept"
    for budget in budgets:
        at = [p for p in points if p["budget"] == budget]
        best = min(at, key=lambda p: p["val"])
        seconds = parse_duration(budget)
        rates = {p["candidate"]: p["chars"] / sizing.readable(1.0, seconds) for p in at}
        choice = sizing.choose(
            {},
            corpus_chars=at[0]["corpus_chars"],
            chars_per_token=1.0,
            device_type="cpu",
            steps=None,
            epochs=None,
            time=seconds,
            speed=lambda s, rates=rates: rates.get(f"{s['layers']}x{s['hidden']}", 1.0),
            clock=lambda: 0.0,
        )
        assert f"{choice.settings['layers']}x{choice.settings['hidden']}" == best["candidate"], budget


def test_train_says_what_it_chose_and_info_shows_it(tmp_path, corpus_path):
    run = [sys.executable, "-m", "chargen", "train", str(corpus_path), "--steps", "2", "--eval-every", "2"]
    auto = subprocess.run([*run, "-o", str(tmp_path / "auto")], capture_output=True, text=True, timeout=300)
    assert auto.returncode == 0, auto.stderr
    assert "--size auto chose" in auto.stderr and "timing" not in auto.stderr  # a step budget times nothing
    shown = subprocess.run(
        [sys.executable, "-m", "chargen", "info", str(tmp_path / "auto" / "best.pt")], capture_output=True, text=True
    )
    assert "chosen" in shown.stdout and "(--size auto)" in shown.stdout
    resumed = subprocess.run(
        [sys.executable, "-m", "chargen", "train", "--resume", str(tmp_path / "auto" / "last.pt"), "--steps", "4"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0 and "--size auto chose" not in resumed.stderr  # a resumed run keeps its model
    assert "of 4" in resumed.stderr  # the last step; the best one is named before it
    fixed = subprocess.run([*run, "-o", str(tmp_path / "fixed"), "--size", "fixed"], capture_output=True, text=True)
    assert fixed.returncode == 0 and "--size auto chose" not in fixed.stderr and "2x384 LSTM" in fixed.stderr
    pinned = subprocess.run(
        [*run, "-o", str(tmp_path / "pinned"), "--layers", "1", "--hidden", "16"], capture_output=True, text=True
    )
    assert pinned.returncode == 0 and "1x16 LSTM" in pinned.stderr and "each candidate" not in pinned.stderr
    assert "--size auto chose, for the 1x16 LSTM asked for, batch 16 x 128" in pinned.stderr  # and the regularisers


def test_measure_times_real_training_steps_of_the_cell_asked_for(corpus_path, tmp_path, monkeypatch):
    import time

    from chargen.config import ModelConfig, TrainConfig
    from chargen.training.run import load_corpus_for, measure
    from chargen.training.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    built, read_at = [], []
    monkeypatch.setattr(Trainer, "step", _counting(Trainer.step, built))
    ticks = iter(range(10**6))

    def clock() -> float:  # each reading 0.4 s after the last: the timed loop runs four steps (1 s)
        read_at.append(len(built))
        return 0.4 * next(ticks)

    data = load_corpus_for(corpus_path, TrainConfig(steps=1))
    settings = {"layers": 1, "hidden": 16, "embed": 8, "batch_size": 4, "seq_len": 16, "lr": 1e-3}
    monkeypatch.setattr(time, "perf_counter", clock)
    rate = measure(data, settings, ModelConfig(cell="gru"), TrainConfig(steps=1, device="cpu"))
    monkeypatch.undo()
    assert read_at[0] == 4  # four warm-up steps before the clock starts: the first steps run slower on a CPU
    timed = len(built) - 4
    assert timed == 4 and rate == pytest.approx(timed * 4 * 16 * data.train_chars / len(data.train) / (0.4 * 4))
    assert {t.model.config.cell for t in built} == {"gru"} and {t.batcher.batch_size for t in built} == {4}
    assert list(tmp_path.iterdir()) == []  # timing writes nothing


def _counting(step, seen: list):
    def counted(trainer):
        seen.append(trainer)
        return step(trainer)

    return counted


def test_a_run_far_from_its_planned_speed_says_so_and_keeps_it(corpus_path, tmp_path):
    from chargen import checkpoint
    from chargen.data import load_corpus
    from chargen.training.trainer import Reporter, Trainer

    from .conftest import tiny_configs

    class Notes(Reporter):
        def __init__(self):
            self.said = []

        def note(self, text):
            self.said.append(text)

    for planned, told in ((1e9, True), (None, False)):  # a plan no CPU meets; no plan at all
        model, config = tiny_configs(steps=40, eval_every=10, chosen="1x32 (a test)", planned_speed=planned)
        notes = Notes()
        Trainer(load_corpus(corpus_path, 0.1), model, config, tmp_path / str(planned), reporter=notes).run()
        said = [n for n in notes.said if "--size auto planned with ~1000000.0k chars/s" in n]
        assert len(said) == told
        kept = checkpoint.read(tmp_path / str(planned) / "last.pt").train_config.chosen
        assert ("then trained at" in kept) == told
