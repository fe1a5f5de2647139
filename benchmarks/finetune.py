"""Fine-tuning measured: `chargen train TEXT --from shakespeare` beside the same run from scratch, on unseen texts.

    python benchmarks/finetune.py texts                 # write the texts to benchmarks/out/finetune/
    python benchmarks/finetune.py tune [LABEL ...]      # the schedule's choice: peak lr and warm-up, on `tune`
    python benchmarks/finetune.py run licences:1m       # one text, one budget, both ways (scratch, from)
    python benchmarks/finetune.py run                   # every text at every budget
    python benchmarks/finetune.py table                 # the results as a markdown table

The texts come from what a Debian machine with Python holds, none of them Shakespeare:
`licences` is the regular files of /usr/share/common-licenses (English legal prose),
`pydoc` is Python's own reference topics (pydoc_data, English technical prose), `names` is the
Unicode names of the code points below U+3000 as Python's unicodedata gives them, one per line
(trained with --lines). The schedule is chosen on `tune`, Vim's user manual (vim-runtime's
usr_*.txt), with a fixed number of steps so that other work on the machine cannot tilt it;
the reported runs are timed, as a user runs them, and each text is split by `chargen train`
itself. Results go to benchmarks/out/finetune/results.jsonl with the CPU that ran them.
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path

from recipe import cpu, record, trained

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "finetune"
BUDGETS = ("1m", "5m")
WAYS = {"scratch": [], "from": ["--from", "shakespeare"]}
TUNE_STEPS = "800"  # about a minute of a 2x384 on a 2-core CPU
TUNE = {  # the schedules tried on `tune`, each from the bundled model
    "lr0.006": ["--lr", "6e-3", "--warmup", "50"],  # what --size auto gives a 2x384 on a CPU, from scratch or not
    "lr0.002-warmup10": ["--lr", "2e-3", "--warmup", "10"],  # gentler peaks, as fine-tuning recipes often use
    "lr0.001-warmup10": ["--lr", "1e-3", "--warmup", "10"],
}


def licences() -> str:
    files = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file() and not p.is_symlink())
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def pydoc() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def names() -> str:
    return "".join(f"{n}\n" for n in (unicodedata.name(chr(i), "") for i in range(0x3000)) if n)


def tune() -> str:
    files = sorted(Path("/usr/share/vim/vim90/doc").glob("usr_*.txt"))
    if not files:
        raise SystemExit("the tuning text is Vim's user manual: apt-get install vim-runtime")
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


TEXTS = {"licences": licences, "pydoc": pydoc, "names": names, "tune": tune}
LINES = {"names"}  # trained one line per example


def text(name: str) -> Path:
    path = OUT / f"{name}.txt"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        path.write_text(TEXTS[name](), encoding="utf-8")
    return path


def train(name: str, label: str, flags: list[str]) -> dict:
    """One `chargen train` run of `text(name)` with `flags`, written to OUT/NAME-LABEL/, and its result recorded."""
    folder = OUT / f"{name}-{label}"
    command = ["chargen", "train", str(text(name)), "-o", str(folder), "--overwrite", *flags]
    command += ["--lines"] if name in LINES else []
    info, last, _ = trained(command, folder)
    return record(
        OUT,
        {
            "text": name,
            "label": label,
            "command": " ".join(command),
            "best_val": info["best_val_loss"],
            "steps": last["step"],
            "trained_s": last["elapsed_s"],
            "epochs": last["epoch"],
            "chosen": info["train"]["chosen"],
            "cpu": cpu(),
        },
    )


def table() -> None:
    rows = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines()]
    latest = {(r["text"], r["label"]): r for r in rows}  # a run done again replaces the earlier one
    print("| text | budget | from scratch | from shakespeare | difference |")
    print("|---|---|---|---|---|")
    for name in TEXTS:
        for budget in BUDGETS:
            scratch, parent = latest.get((name, f"scratch-{budget}")), latest.get((name, f"from-{budget}"))
            if scratch and parent:
                gain = parent["best_val"] - scratch["best_val"]
                print(
                    f"| {name} | {budget} | {scratch['best_val']:.4f} ({scratch['epochs']:.1f} epochs) "
                    f"| {parent['best_val']:.4f} ({parent['epochs']:.1f} epochs) | {gain:+.4f} |"
                )
    tuned = [latest[k] for k in latest if k[0] == "tune"]
    if tuned:
        print("\n| tune schedule | best val |\n|---|---|")
        for r in tuned:
            print(f"| {r['label']} | {r['best_val']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["texts", "tune", "run", "table"])
    ap.add_argument("which", nargs="*", help="NAME or NAME:BUDGET (run), LABEL (tune)")
    args = ap.parse_args()
    if args.step == "texts":
        for name in TEXTS:
            print(text(name))
    elif args.step == "tune":
        for label in args.which or TUNE:
            train("tune", label, ["--from", "shakespeare", "--steps", TUNE_STEPS, *TUNE[label]])
    elif args.step == "table":
        table()
    else:
        wanted = args.which or [n for n in TEXTS if n != "tune"]
        for which in wanted:
            name, _, budget = which.partition(":")
            for b in [budget] if budget else BUDGETS:
                for way, flags in WAYS.items():
                    train(name, f"{way}-{b}", ["--time", b, *flags])


if __name__ == "__main__":
    main()
