"""Dynamic evaluation against compressors: static and dynamic bits/char of a 5-minute model on its held-out tail.

    python benchmarks/dynamic.py corpora          # write the texts to benchmarks/out/dynamic/
    python benchmarks/dynamic.py train            # a 5-minute model of each (skipped when it exists)
    python benchmarks/dynamic.py sweep            # the dynamic settings, tried on the tuning text only
    python benchmarks/dynamic.py table [NAME...]  # static, dynamic, xz -9e and zstd -19 --long on each tail

The texts: tiny shakespeare; the Python source of numpy (not its tests); Russian fortunes
(Debian's fortunes-ru, UTF-8); the source of hypothesis, on which the dynamic settings were
chosen (so it is not reported as a result); and the top level of Python's standard library, an
independent check. Each model is `chargen train TEXT` with the defaults (5 minutes), and each
tail is the last 10% of the text's characters, the model's validation text.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

OUT = Path(__file__).parent / "out" / "dynamic"
REPORTED = ("shakespeare", "numpy", "fortunes-ru", "stdlib")
TUNING = "hypothesis"


def package_source(name: str, skip_tests: bool = True) -> list[Path]:
    root = Path(importlib.util.find_spec(name).origin).parent
    return sorted(p for p in root.rglob("*.py") if not (skip_tests and "tests" in p.relative_to(root).parts))


def sources() -> dict[str, list[Path]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return {
        "shakespeare": [Path(__file__).parent.parent / "corpora" / "tinyshakespeare.txt"],
        "numpy": package_source("numpy"),
        "fortunes-ru": sorted(Path("/usr/share/games/fortunes/ru").glob("*.u8")),
        TUNING: package_source(TUNING),
        "stdlib": sorted(stdlib.glob("*.py")),
    }


def write_corpora() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, files in sources().items():
        if not files:
            sys.exit(f"no files for {name}: for fortunes-ru, apt-get install fortunes-ru")
        with open(OUT / f"{name}.txt", "w", encoding="utf-8") as out:
            for path in files:
                out.write(path.read_text(encoding="utf-8", errors="replace").rstrip("\n") + "\n")
        print(f"{name}: {len(files)} files, {(OUT / f'{name}.txt').stat().st_size:,} bytes", flush=True)


def train_models() -> None:
    for name in (*REPORTED, TUNING):
        out = OUT / "models" / name
        if (out / "best.pt").exists():
            print(f"{name}: {out / 'best.pt'} exists", flush=True)
            continue
        subprocess.run(["chargen", "train", str(OUT / f"{name}.txt"), "--size", "fixed", "-o", str(out)], check=True)


def tail(name: str) -> Path:
    """The last 10% of the text's characters, as the model's validation split cut it."""
    from chargen.data import corpus_files, read_chunks

    text = "".join(read_chunks(corpus_files(OUT / f"{name}.txt")))
    path = OUT / f"{name}.tail.txt"
    path.write_text(text[len(text) - max(1, int(len(text) * 0.1)) :], encoding="utf-8")
    return path


def compressed_bpc(path: Path, command: list[str]) -> float:
    size = len(subprocess.run([*command, str(path)], capture_output=True, check=True).stdout)
    return 8 * size / len(path.read_text(encoding="utf-8"))


def scores(name: str, dynamic: bool, *settings: str) -> dict:
    args = ["chargen", "eval", "-c", str(OUT / "models" / name / "best.pt"), str(tail(name)), "--json"]
    args += ["--device", "cpu", *settings] + (["--dynamic"] if dynamic else [])
    start = time.perf_counter()
    result = json.loads(subprocess.run(args, capture_output=True, check=True, text=True).stdout)
    return {**result, "seconds": time.perf_counter() - start}


def table(names: tuple[str, ...]) -> None:
    print("| text | tail chars | static bpc | dynamic bpc | xz -9e | zstd -19 --long | static / dynamic chars/s |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        static, dynamic = scores(name, False), scores(name, True)
        path = tail(name)
        xz = compressed_bpc(path, ["xz", "-9e", "-c"])
        zstd = compressed_bpc(path, ["zstd", "-19", "--long", "-c", "-q"]) if shutil.which("zstd") else math.nan
        rates = f"{static['chars'] / static['seconds']:,.0f} / {dynamic['chars'] / dynamic['seconds']:,.0f}"
        print(
            f"| {name} | {static['chars']:,} | {static['bits_per_char']:.3f} | {dynamic['bits_per_char']:.3f} "
            f"| {xz:.3f} | {zstd:.3f} | {rates} |",
            flush=True,
        )


def sweep() -> None:
    """Learning rate and decay at window 64, then the window at the best of those: on the tuning text."""
    static = scores(TUNING, False)["bits_per_char"]
    print(f"{TUNING} tail, static {static:.4f} bpc\n\n| learn rate | decay | window | dynamic bpc |\n|---|---|---|---|")
    tried = {}
    for rate in ("1e-4", "3e-4", "1e-3", "3e-3"):
        for decay in ("0", "0.001", "0.01"):
            tried[rate, decay, "64"] = scores(TUNING, True, "--learn-rate", rate, "--learn-decay", decay)
            print(f"| {rate} | {decay} | 64 | {tried[rate, decay, '64']['bits_per_char']:.4f} |", flush=True)
    rate, decay, _ = min(tried, key=lambda k: tried[k]["bits_per_char"])
    for window in ("32", "128"):
        bpc = scores(TUNING, True, "--learn-rate", rate, "--learn-decay", decay, "--learn-window", window)
        print(f"| {rate} | {decay} | {window} | {bpc['bits_per_char']:.4f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["corpora", "train", "sweep", "table"])
    ap.add_argument("names", nargs="*", help=f"table: only these of {', '.join(REPORTED)}")
    args = ap.parse_args()
    if unknown := set(args.names) - set(REPORTED):
        ap.error(f"no text named {', '.join(sorted(unknown))}; choose from {', '.join(REPORTED)}")
    if args.step == "corpora":
        write_corpora()
    elif args.step == "train":
        train_models()
    elif args.step == "sweep":
        sweep()
    else:
        table(tuple(args.names) or REPORTED)


if __name__ == "__main__":
    main()
