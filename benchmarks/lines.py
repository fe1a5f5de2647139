"""Line mode in five minutes: a word list, each line read from a fresh state or with the state carried.

    python benchmarks/lines.py corpus        # 32,000 words from Debian's wamerican list (apt-get install wamerican)
    python benchmarks/lines.py train         # `chargen train words.txt --lines` for 5 minutes, both line states
    python benchmarks/lines.py report        # validation loss per character (line ends included), share of new samples

The list: the lowercase words of /usr/share/dict/american-english (letters a-z only, 63,875
of them), 32,000 drawn at random with seed 0, one per line, in that random order. The share
of new samples is over 100 samples at temperature 1 (seed 1): a line that is in neither the
training nor the validation part of the list.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).parent / "out" / "lines"
WORDS = OUT / "words.txt"
STATES = ("reset", "carry")


def corpus() -> None:
    words = [w for w in Path("/usr/share/dict/american-english").read_text().split("\n") if re.fullmatch("[a-z]+", w)]
    OUT.mkdir(parents=True, exist_ok=True)
    WORDS.write_text("".join(w + "\n" for w in random.Random(0).sample(words, 32_000)))
    print(f"{WORDS}: 32,000 of {len(words):,} words, {WORDS.stat().st_size:,} bytes")


def train() -> None:
    for state in STATES:
        out = OUT / state
        if (out / "best.pt").exists():
            print(f"{out / 'best.pt'} exists")
            continue
        subprocess.run(
            ["chargen", "train", str(WORDS), "--lines", "--line-state", state, "--size", "fixed", "-o", str(out)],
            check=True,
        )


def report() -> None:
    print("| line state | val nats/char | val bpc | steps | new of 100 samples | samples |")
    print("|---|---|---|---|---|---|")
    for state in STATES:
        ckpt = OUT / state / "best.pt"
        info = json.loads(subprocess.run(["chargen", "info", ckpt, "--json"], capture_output=True, text=True).stdout)
        args = ["chargen", "sample", "-c", ckpt, "-n", "100", "-t", "1", "--seed", "1", "--mark"]
        marked = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
        new = [line.split("\t", 1)[1] for line in marked if line.startswith("new\t")]
        print(
            f"| {state} | {info['best_val_loss']:.4f} | {info['best_val_bpc']:.4f} | {info['step']:,} "
            f"| {len(new)} | {', '.join(new[:8])} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["corpus", "train", "report"])
    {"corpus": corpus, "train": train, "report": report}[ap.parse_args().step]()


if __name__ == "__main__":
    main()
