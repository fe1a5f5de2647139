"""Speed of chargen on this machine: the real trainer against the bare kernel, and sampling.

    python benchmarks/bench.py                      # CPU, all sizes, a table and benchmarks/out/bench-cpu.json
    python benchmarks/bench.py --device cuda --shapes 128x256,256x256
    python benchmarks/bench.py --only sampling

Training: for each model size and (batch x window) shape, chars/s of the real trainer's step
(`Trainer.step`: batching from the id array, forward, loss, backward, clipping, AdamW,
schedule, carried state), and chars/s of a bare loop of embedding + nn.LSTM + head
forward and backward on random ids, with no data pipeline, no optimizer and no logging: the
kernel ceiling. Their ratio says how much the trainer adds. Sampling (2x256 and the default
model): chars/s of one stream, of 64 streams in one batch (in fp32 and, as `sample --bf16`
runs them, in bf16), and the time to the first character after a 1,000-character prime (the
chat latency). Medians of several timed repeats after warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.data import Corpus
from chargen.generate import Generator
from chargen.model import CharLM
from chargen.tokenizer import CharTokenizer
from chargen.training.trainer import Trainer

SIZES = {"1x128": (1, 128), "2x256": (2, 256), "3x512": (3, 512), "2x1024": (2, 1024)}
ROOT = Path(__file__).resolve().parent.parent


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fns, device, warmup: int, repeats: int, inner: int) -> list[float]:
    """Median seconds of one call of each of `fns`, their repeats interleaved so drift hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            spent.append((time.perf_counter() - t0) / inner)
    return [statistics.median(t) for t in times]


def corpus() -> Corpus:
    text = (ROOT / "corpora" / "tinyshakespeare.txt").read_text()
    tok = CharTokenizer.fit([text])
    ids = tok.encode(text)
    cut = len(ids) * 9 // 10
    return Corpus("tinyshakespeare", "", tok, ids[:cut], ids[cut:], cut, len(ids) - cut)


def bare_step(model: CharLM, x: torch.Tensor, y: torch.Tensor) -> None:
    """The kernel ceiling: forward and backward of embedding, recurrence and head, nothing else."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        logits, _ = model(x)
    F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()


def write_rate(gen: Generator, streams: int, length: int = 2000) -> float:
    """Characters per second written by `streams` streams sampled as one batch."""
    primed = gen.prime("\n", batch=streams)
    t0 = time.perf_counter()
    for _ in gen.stream(primed, SampleConfig(length=length, temp=0.8, seed=1)):
        pass
    sync(gen.device)
    return length * streams / (time.perf_counter() - t0)


def first_char(gen: Generator, prime: str) -> float:
    """Seconds from a prime's arrival to the first character written after it (what a chat turn feels)."""
    t0 = time.perf_counter()
    next(iter(gen.stream(gen.prime(prime), SampleConfig(length=10, seed=1))))
    return time.perf_counter() - t0


def bench_training(device: torch.device, sizes: list[str], shapes: list[tuple[int, int]], inner: int) -> list[dict]:
    data, rows = corpus(), []
    vocab = data.tokenizer.vocab_size
    for size in sizes:
        layers, hidden = SIZES[size]
        model_config = ModelConfig(layers=layers, hidden=hidden, embed=64, dropout=0.0)
        for batch, window in shapes:
            config = TrainConfig(batch_size=batch, seq_len=window, steps=10**9, device=device.type, eval_every=10**9)
            trainer = Trainer(data, model_config, config, "/tmp/chargen-bench")
            bare = CharLM(vocab, model_config).to(device)
            x = torch.randint(0, vocab, (batch, window), device=device)
            y = torch.randint(0, vocab, (batch, window), device=device)
            trainer_s, bare_s = timed([trainer.step, partial(bare_step, bare, x, y)], device, 3, 7, inner)
            chars = batch * window
            rows.append(
                {
                    "size": size,
                    "batch": batch,
                    "window": window,
                    "trainer_chars_per_s": round(chars / trainer_s),
                    "bare_chars_per_s": round(chars / bare_s),
                    "ratio": round(bare_s / trainer_s, 3),
                }
            )
            print(
                f"train {size:>6} {batch:>4}x{window:<4} trainer {chars / trainer_s:>11,.0f} chars/s   "
                f"bare {chars / bare_s:>11,.0f} chars/s   ratio {bare_s / trainer_s:.3f}",
                flush=True,
            )
    return rows


def bench_sampling(device: torch.device, sizes: list[str]) -> list[dict]:
    data, rows = corpus(), []
    prime = (ROOT / "corpora" / "tinyshakespeare.txt").read_text()[:1000]
    for size in sizes:
        layers, hidden = SIZES[size]
        torch.manual_seed(0)
        model = CharLM(data.tokenizer.vocab_size, ModelConfig(layers=layers, hidden=hidden, embed=64)).to(device)
        gen16 = Generator(copy.deepcopy(model), data.tokenizer, device, dtype=torch.bfloat16)  # sample --bf16
        gen = Generator(model, data.tokenizer, device)
        write_rate(gen, 1)  # warm-up
        write_rate(gen16, 64)
        one = statistics.median(write_rate(gen, 1) for _ in range(3))
        many = statistics.median(write_rate(gen, 64) for _ in range(3))
        many16 = statistics.median(write_rate(gen16, 64) for _ in range(3))
        first_char(gen, prime)
        latency = statistics.median(first_char(gen, prime) for _ in range(9))
        rows.append(
            {
                "size": size,
                "one_stream_chars_per_s": round(one),
                "batch64_chars_per_s": round(many),
                "batch64_speedup": round(many / one, 1),
                "batch64_bf16_chars_per_s": round(many16),
                "batch64_bf16_speedup": round(many16 / one, 1),
                "first_char_after_1000_prime_ms": round(latency * 1000, 1),
            }
        )
        print(
            f"sample {size:>6}  one stream {one:>9,.0f} chars/s   64 streams {many:>10,.0f} chars/s "
            f"({many / one:.1f}x), in bf16 {many16:>10,.0f} ({many16 / one:.1f}x)   "
            f"first char after a 1,000-char prime {latency * 1000:.1f} ms",
            flush=True,
        )
    return rows


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--shapes", default=None, help="BxT,BxT (default: 16x128,64x128 on CPU; 64x256,256x256 on GPU)")
    ap.add_argument("--sample-sizes", default="2x256,2x384")
    ap.add_argument("--only", choices=["training", "sampling"], default=None)
    ap.add_argument("--inner", type=int, default=None, help="steps per timed repeat")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    SIZES.setdefault("2x384", (2, 384))
    shapes = args.shapes or ("16x128,64x128" if device.type == "cpu" else "64x256,256x256")
    shape_list = [tuple(int(v) for v in s.split("x")) for s in shapes.split(",")]
    inner = args.inner or (3 if device.type == "cpu" else 20)
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    header = {
        "device": f"{device.type}: {name}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(json.dumps(header), flush=True)
    result = {**header, "training": [], "sampling": []}
    if args.only != "sampling":
        result["training"] = bench_training(device, args.sizes.split(","), shape_list, inner)
    if args.only != "training":
        with torch.inference_mode():
            result["sampling"] = bench_sampling(device, args.sample_sizes.split(","))
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"bench-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
