"""The sizing sweep: a ladder of model sizes trained for a few compute budgets on three corpora, and its table.

    python benchmarks/sizing.py words                 # the short-lines corpus: benchmarks/out/words.txt
    python benchmarks/sizing.py run                   # every run of the plan below not yet done
    python benchmarks/sizing.py run shakespeare:2x256:5m
    python benchmarks/sizing.py speeds                # chars/s of each candidate here: out/sizing/speeds-cpu.json
    python benchmarks/sizing.py table                 # writes chargen/training/sizing.json's points, prints a table
    python benchmarks/sizing.py auto shakespeare:5m   # `chargen train` with no flags, timed: what it chose and reached
    bash benchmarks/gpu.sh                            # the GPU's speeds and runs, on a CUDA machine

A run's budget is a number of steps, not a clock: `--steps` is the characters that the
candidate reads in that many minutes at this machine's measured speed, so every point of the
table is what a run *can read*, and the sweep gives the same figures on a busy or a quiet
machine (the rule depends on what a run can read, not on the clock). A slower machine is a
shorter budget on this one (`--clock` budgets by wall-clock time instead, as a lent GPU's lease
needs). Each run is `chargen train` with every size flag given (so it
trains exactly that model) and is skipped when its folder already holds a finished run.

Corpora: tiny shakespeare (1.1 MB of plays, read as streams); `words`: every sixth line
of Debian's wamerican word list (/usr/share/dict/american-english, 102,000 words), about
165 KB of short lines, read with `--lines`; and `tune`: 30,000 bytes from the middle of tiny
shakespeare (recipe.py cuts it), the reference of texts read tens or hundreds of times, whose runs
`--size auto` gives every regulariser. `table --write` replaces the points of the runs that are
here and keeps the others (the sweep has been run on more than one machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import recipe

from chargen.config import parse_duration
from chargen.training import sizing

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "sizing"  # --out changes it
WORDS = ROOT / "benchmarks" / "out" / "words.txt"
CORPORA = {
    "shakespeare": (ROOT / "corpora" / "tinyshakespeare.txt", []),
    "words": (WORDS, ["--lines"]),
    "tune": (recipe.OUT / "tune.txt", []),  # 30,000 bytes of tiny shakespeare (recipe.py): the small texts
}
# corpus:candidate:budget[:flag=value,...], most telling first: what the checked-in table was fitted from
PLAN = [
    "shakespeare:2x256:5m",
    "shakespeare:2x384:5m",
    "shakespeare:2x384:6m",
    "shakespeare:2x512:5m",
    "shakespeare:2x384:5m:dropout=0.0",
    "shakespeare:2x384:5m:lr=0.006",
    "shakespeare:2x384:5m:dropout=0.0,lr=0.006",
    "shakespeare:2x256:1m",
    "shakespeare:2x128:1m",
    "shakespeare:2x384:1m",
    "words:2x128:5m",
    "words:2x256:5m",
    "words:2x384:5m",
    "tune:2x128:2m",
    "tune:2x256:2m",
    "tune:2x384:2m",
    "tune:2x256:1m",
    "tune:2x256:5m",
]


def make_words() -> None:
    lines = Path("/usr/share/dict/american-english").read_text().splitlines()
    WORDS.parent.mkdir(parents=True, exist_ok=True)
    WORDS.write_text("\n".join(lines[::6]) + "\n")
    print(f"wrote {WORDS}: {len(lines[::6]):,} words, {WORDS.stat().st_size:,} bytes")


def speeds(device: str, out: Path) -> None:
    """Training chars/s of every candidate for `device` on tiny shakespeare, as `chargen train` measures them."""
    from chargen.config import ModelConfig, TrainConfig
    from chargen.training.run import load_corpus_for, measure

    config = TrainConfig(device=device, steps=1)
    data = load_corpus_for(CORPORA["shakespeare"][0], config)
    rates = {}
    for rung in sizing.ladder(sizing.kind_of(device)):
        rates[rung.name] = round(measure(data, sizing.settings_of(rung), ModelConfig(), config))
        print(f"{rung.name}: {rates[rung.name]:,} chars/s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rates, indent=1))


def run(spec: str, rates: dict[str, float], device: str, clock: bool) -> None:
    corpus_key, name, budget, *extra = spec.split(":")
    kind = sizing.kind_of(device)
    candidate = sizing.candidate(name, kind)
    corpus, mode = CORPORA[corpus_key]
    if corpus_key in recipe.TEXTS:
        recipe.text(corpus_key)  # cut from tiny shakespeare on first use
    flags = dict(candidate.flags())
    flags.update(dict(kv.split("=") for kv in extra[0].split(",")) if extra else {})
    seconds = parse_duration(budget)
    chars = sizing.readable(rates[name], seconds)
    tokens_per_step = int(flags["batch-size"]) * int(flags["seq-len"])
    steps = max(1, round(chars / tokens_per_step))
    train_chars = len(corpus.read_text()) * 0.9  # the training part: all but the held-out tenth
    for key, value in sizing.regularisers_for(chars / train_chars).items():  # as --size auto does
        flag = key.replace("_", "-")
        if key == "locked":
            flags.setdefault("locked-dropout" if value else "no-locked-dropout", "")
        else:
            flags.setdefault(flag, str(value))
    folder = OUT / f"{corpus_key}-{kind}" / spec.split(":", 1)[1].replace(":", "-").replace(",", "-").replace("=", "")
    if (folder / "done.json").exists():
        return
    budget_flags = ["--time", budget] if clock else ["--steps", str(steps)]
    argv = [sys.executable, "-m", "chargen", "train", str(corpus), *budget_flags, "-o", str(folder), "--overwrite"]
    argv += ["--device", device, *mode]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)] if value != "" else [f"--{key}"]  # a switch takes no value
    print(" ".join(argv), flush=True)
    subprocess.run(argv, check=True, stderr=subprocess.DEVNULL)
    write_done(folder, spec, kind, flags)


def write_done(folder: Path, spec: str, kind: str, flags: dict) -> dict:
    from chargen import checkpoint

    saved = checkpoint.read(folder / "last.pt")
    rows = saved.metrics
    best = min(rows, key=lambda r: r["val_loss"])
    tokens_per_step = saved.batch_size * saved.train_config.seq_len
    chars_per_token = saved.corpus.train_chars / saved.corpus.train_tokens
    done = {
        "spec": spec,
        "device": kind,
        "corpus": spec.split(":")[0],
        "corpus_chars": saved.corpus.train_chars,
        "candidate": spec.split(":")[1],
        "budget": spec.split(":")[2],
        "flags": flags,
        "steps": saved.position.step,
        "chars_read": round(saved.position.step * tokens_per_step * chars_per_token),
        "epochs": saved.epochs,
        "best_val": best["val_loss"],
        "best_step": best["step"],
        "final_val": rows[-1]["val_loss"],
        "elapsed_s": round(saved.position.elapsed, 1),
    }
    (folder / "done.json").write_text(json.dumps(done, indent=1))
    print(json.dumps(done), flush=True)
    return done


def auto(spec: str) -> None:
    """`chargen train CORPUS --time BUDGET` with no size flags, on a quiet machine: the rule's own result."""
    corpus_key, budget = spec.split(":")
    corpus, mode = CORPORA[corpus_key]
    folder = OUT / "auto" / f"{corpus_key}-{budget}"
    argv = [sys.executable, "-m", "chargen", "train", str(corpus), "--time", budget, "-o", str(folder), "--overwrite"]
    run = subprocess.run([*argv, *mode], capture_output=True, text=True, check=True)
    chose = [line for line in run.stderr.splitlines() if "--size auto" in line or line.startswith("so many")]
    from chargen import checkpoint

    saved = checkpoint.read(folder / "last.pt")
    rows = saved.metrics
    best = min(rows, key=lambda r: r["val_loss"])
    print("\n".join(chose))
    print(
        f"{spec}: {saved.model_config.summary()}, best val {best['val_loss']:.4f} nats/char at step {best['step']} "
        f"of {saved.position.step}, {saved.epochs:.1f} epochs, {rows[-1]['chars_per_sec']:,.0f} chars/s, "
        f"{saved.position.elapsed:.0f}s",
        flush=True,
    )


def own(done: dict) -> bool:
    """Whether a run trained its rung as the ladder now has it (model, batch, lr), whatever its budget and dropout."""
    rung = sizing.candidate(done["candidate"], done["device"]).flags()
    others = set(variant(done)) - set(rung) - {"epochs", "dropout", "eval-every"}  # weight decay, say
    return not others and all(float(done["flags"].get(k, v)) == float(v) for k, v in rung.items())


def variant(done: dict) -> dict:
    """The flags a run set beyond its candidate's own: `spec`'s fourth part."""
    extra = done["spec"].split(":")[3:]
    return dict(kv.split("=") for kv in extra[0].split(",")) if extra else {}


def table(write: bool) -> None:
    """The sweep's results as a Markdown table; with `write`, also as the points of chargen/training/sizing.json."""
    done = [json.loads(p.read_text()) for p in sorted(OUT.glob("*/*/done.json"))]
    done.sort(key=lambda d: (d["device"], d["corpus"], parse_duration(d["budget"]), d["best_val"]))
    print("| device | corpus | model | budget | dropout | lr | other flags | characters read | epochs | best val |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in done:
        f = d["flags"]
        extra = ", ".join(f"{k} {v}" for k, v in variant(d).items() if k not in ("dropout", "lr"))
        print(
            f"| {d['device']} | {d['corpus']} | {d['candidate']} | {d['budget']} | {f.get('dropout', '-')} "
            f"| {f.get('lr', '-')} | {extra} | {d['chars_read']:,} | {d['epochs']:.1f} | {d['best_val']:.4f} |"
        )
    if write:
        path = ROOT / "chargen" / "training" / "sizing.json"
        tab = json.loads(path.read_text())
        key = lambda p: (p["device"], p["corpus"], p["candidate"], p["budget"])  # noqa: E731
        swept = {key(d) for d in done}  # a run made elsewhere and not here keeps its point
        tab["points"] = [p for p in tab["points"] if key(p) not in swept] + [
            {k: d[k] for k in ("device", "corpus", "corpus_chars", "candidate", "budget")}
            | {"chars": d["chars_read"], "val": d["best_val"]}
            for d in done
            if own(d)
        ]
        for kind, device in (("cpu", "cpu"), ("gpu", "cuda")):  # the speeds the sweep's budgets were read at
            if (OUT / f"speeds-{device}.json").exists():
                tab.setdefault("sweep_speeds", {})[kind] = json.loads((OUT / f"speeds-{device}.json").read_text())
        path.write_text(
            "{\n"
            + ",\n".join(
                f' "{key}": [\n' + ",\n".join(f"  {json.dumps(v)}" for v in value) + "\n ]"
                if isinstance(value, list)
                else f' "{key}": {json.dumps(value)}'
                for key, value in tab.items()
            )
            + "\n}\n"
        )
        print(f"wrote {len(tab['points'])} points to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["words", "speeds", "run", "table", "auto"])
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--speeds", default=None, help="chars/s of each candidate [default: out/sizing/speeds-DEVICE.json]")
    ap.add_argument("--clock", action="store_true", help="budget each run by wall-clock time, not by steps")
    ap.add_argument("--write", action="store_true", help="table: write the points into chargen/training/sizing.json")
    ap.add_argument("--out", default=None, help="the runs' folder [default: benchmarks/out/sizing]")
    args = ap.parse_args()
    global OUT
    OUT = Path(args.out) if args.out else OUT
    rates = Path(args.speeds or OUT / f"speeds-{args.device}.json")
    kind = sizing.kind_of(args.device)
    if args.what == "words":
        make_words()
    elif args.what == "speeds":
        speeds(args.device, rates)
    elif args.what == "run":
        # without this machine's speeds, the checked-in table's (enough for --clock, where they only say the epochs)
        speeds_read = json.loads(rates.read_text()) if rates.exists() else sizing.table()["sweep_speeds"][kind]
        for spec in args.specs or PLAN:
            run(spec, speeds_read, args.device, args.clock)
    elif args.what == "auto":
        for spec in args.specs:
            auto(spec)
    else:
        table(args.write)


if __name__ == "__main__":
    sys.exit(main())
