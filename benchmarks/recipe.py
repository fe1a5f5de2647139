"""The regularised recipe, measured: each regulariser alone and together, and the no-flag runs of each regime.

    python benchmarks/recipe.py slices                       # the small texts: benchmarks/out/recipe/*.txt
    python benchmarks/recipe.py run tune:locked              # one run of the plan below (NAME:VARIANT)
    python benchmarks/recipe.py run tune                     # every variant on one text, not yet done
    python benchmarks/recipe.py run small:auto --code DIR    # the same run with the chargen of another checkout
    python benchmarks/recipe.py run tune:all tune:all+ar --steps 724   # budgeted in steps: as much read by each
    python benchmarks/recipe.py table                        # the results as a markdown table

Every run is `chargen train TEXT --time BUDGET` with the variant's flags, written to
benchmarks/out/recipe/NAME-VARIANT/; its best validation loss, the seconds it trained and the
epochs it read go to benchmarks/out/recipe/results.jsonl with the CPU that ran it. The ablations
fix the model (2x256, batch 16 x 128, lr 4e-3) so that only the regularisers differ; the variant
`auto` gives no flag at all: what a user gets. `tune` is a 30,000-byte slice from the middle of
tiny shakespeare, where choices are made; `small` is the first 30,000 bytes, where they are
only reported (the issue's target), so no choice is fitted to the text it is reported on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from chargen.training import sizing

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "recipe"
SHAKESPEARE = ROOT / "corpora" / "tinyshakespeare.txt"
TEXTS = {  # name: (how it is cut from tiny shakespeare, the budget of its runs)
    "tune": ((500_000, 530_000), "2m"),
    "small": ((0, 30_000), "2m"),
    "shakespeare": (None, "5m"),
    "shakespeare20": (None, "20m"),
}
FIXED = ["--layers", "2", "--hidden", "256", "--batch-size", "16", "--seq-len", "128", "--lr", "4e-3"]
EVERY = ["--dropout", "0.3", "--locked-dropout", "--weight-drop", "0.5", "--embed-drop", "0.1", "--average", "0.999"]


def _flags(rung: sizing.Candidate) -> list[str]:
    return [part for k, v in rung.flags().items() for part in (f"--{k}", v)]


VARIANTS = {
    "dropout0.1": [*FIXED, "--dropout", "0.1"],  # the 2015 recipe: dropout on the embedding, between layers, head
    "dropout0.3": [*FIXED, "--dropout", "0.3"],
    "locked0.3": [*FIXED, "--dropout", "0.3", "--locked-dropout"],
    "weightdrop0.5": [*FIXED, "--dropout", "0.1", "--weight-drop", "0.5"],
    "embeddrop0.1": [*FIXED, "--dropout", "0.1", "--embed-drop", "0.1"],
    "average0.999": [*FIXED, "--dropout", "0.1", "--average", "0.999"],
    "all": [*FIXED, *EVERY],
    "all+ar": [*FIXED, *EVERY, "--ar", "2", "--tar", "1"],  # AWD-LSTM's alpha and beta
    "all-lr6": [*FIXED, *EVERY, "--lr", "6e-3"],  # a later --lr wins
    "all-lr8": [*FIXED, *EVERY, "--lr", "8e-3"],
    "all-lr6+ar": [*FIXED, *EVERY, "--lr", "6e-3", "--ar", "2", "--tar", "1"],
    **{f"all-{r.name}": [*_flags(r), *EVERY] for r in sizing.ladder("cpu")},  # the ladder, every regulariser on
    "auto": [],
}


def cpu() -> str:
    """The CPU's model name and whether it has AVX-512 (with bf16): training speed turns on both."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    family = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("cpu family")), "?")
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model\t")), "?")
    vector = "AVX-512 with bf16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2 only"
    return f"{name} (family {family}, model {model}), {vector}, {platform.machine()}"


def text(name: str) -> Path:
    cut, _ = TEXTS[name]
    if cut is None:
        return SHAKESPEARE
    path = OUT / f"{name}.txt"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SHAKESPEARE.read_bytes()[cut[0] : cut[1]])
    return path


def run(name: str, variant: str, code: Path | None = None, steps: int | None = None) -> dict:
    """One run; `code` is another checkout whose chargen runs it (a commit from before a change, say); `steps`
    budgets it in steps, not time, so that runs on a machine whose speed drifts read as much as each other."""
    _, budget = TEXTS[name]
    label = (variant if code is None else f"{variant}@{_commit(code)}") + (f"-{steps}steps" if steps else "")
    folder = OUT / f"{name}-{label}"
    budgeted = ["--steps", str(steps)] if steps else ["--time", budget]
    command = ["chargen", "train", str(text(name)), *budgeted, "-o", str(folder), "--overwrite"]
    command += VARIANTS[variant]
    best, last, said = trained(command, folder, code)
    chosen = next((line for line in said.splitlines() if "--size auto chose" in line), None)
    return record(
        OUT,
        {
            "text": name,
            "variant": label,
            "budget": f"{steps} steps" if steps else budget,
            "command": " ".join(command),
            "best_val": best["best_val_loss"],
            "weights": best.get("weights", "trained"),
            "trained_s": last["elapsed_s"],
            "epochs": last["epoch"],
            "chosen": chosen,
            "cpu": cpu(),
        },
    )


def trained(command: list[str], folder: Path, code: Path | None = None) -> tuple[dict, dict, str]:
    """Run `command` (`chargen train ... -o folder`), with the chargen of the checkout `code` if given; then its
    best.pt as `chargen info --json` tells it, its last metrics record, and what it said on stderr."""
    print("+", " ".join(command), flush=True)
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None  # run from there: `-m` looks in the cwd first
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, env=env, cwd=code)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    best = json.loads(
        subprocess.run(
            [sys.executable, "-m", "chargen", "info", str(folder / "best.pt"), "--json"], capture_output=True, text=True
        ).stdout
    )  # read by this checkout's chargen, which reads every older checkpoint
    last = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
    return best, last, done.stderr


def record(out: Path, result: dict) -> dict:
    """`result` added to out/results.jsonl, and printed."""
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def _commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def table() -> None:
    rows = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines()]
    print("| text, budget | variant | best val (nats/char) | at epoch | trained | of epochs | weights kept |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        budget = r.get("budget") or TEXTS[r["text"]][1]
        metrics = OUT / f"{r['text']}-{r['variant']}" / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        best = min(records, key=lambda m: m["val_loss"])["epoch"] if records else float("nan")
        print(
            f"| {r['text']}, {budget} | {r['variant']} | {r['best_val']:.4f} | {best:.1f} | {r['trained_s']:.0f} s "
            f"| {r['epochs']:.1f} | {r['weights']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["slices", "run", "table"])
    ap.add_argument("which", nargs="*", help="NAME or NAME:VARIANT")
    ap.add_argument("--code", type=Path, help="a checkout whose chargen runs instead of this one")
    ap.add_argument("--steps", type=int, help="budget each run in steps instead of its text's time")
    args = ap.parse_args()
    if args.step == "slices":
        for name in TEXTS:
            print(text(name))
    elif args.step == "table":
        table()
    else:
        for which in args.which:
            name, _, variant = which.partition(":")
            for v in [variant] if variant else list(VARIANTS):
                run(name, v, args.code, args.steps)


if __name__ == "__main__":
    main()
