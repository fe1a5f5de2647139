"""`chargen sample`: write text in the style of a trained model, streaming to stdout."""

from __future__ import annotations

import click

from chargen.cli import cli
from chargen.cli.options import (
    checkpoint_option,
    device_option,
    learn_config,
    learn_options,
    resolve_checkpoint,
    sample_config,
    sampling_options,
)


@cli.command()
@checkpoint_option
@sampling_options
@click.option("--prime", default="", help="Text the sample starts from (printed first); \\n escapes work.")
@click.option("--prime-file", type=click.Path(dir_okay=False), help="Read the prime from this file.")
@click.option(
    "-n",
    "--num-samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Samples, written as one batch.",
)
@click.option(
    "--bf16",
    is_flag=True,
    help="Run the model in bfloat16: about twice as fast for many samples (-n 64) on a CPU with bf16 "
    "arithmetic (AVX512-BF16, AMX), slower on other CPUs; the text differs from fp32's.",
)
@click.option(
    "--mark", is_flag=True, help="Line-mode models: write each line as MARK<tab>LINE (new, in train, in val)."
)
@click.option(
    "--new-only", is_flag=True, help="Line-mode models: keep only lines that are in neither training nor val."
)
@click.option("--learn", is_flag=True, help="Let the model learn from the prime as it reads it (dynamic evaluation).")
@learn_options
@device_option
def sample(checkpoint, prime, prime_file, num_samples, bf16, mark, new_only, learn, device, **sampling) -> None:
    """Write text from a trained model to stdout.

    A line-mode model (trained with --lines) writes whole lines, one per sample, each starting
    with --prime, and says on stderr how many are new and how many are copies of its list.

    \b
      chargen sample --temp 0.8 --prime "ROMEO:"
      chargen sample -c checkpoints/novel/best.pt -n 4 -l 300 --seed 1 > samples.txt
      chargen sample -c checkpoints/names/best.pt -n 20 --new-only
    """
    from chargen import cli as group
    from chargen.cli import console
    from chargen.config import as_text, unescape
    from chargen.data import corpus_files, read_chunks
    from chargen.errors import ChargenError

    if group.STDOUT_CLOSED:
        raise ChargenError("standard output is closed: there is nowhere to write the text (redirect it to a file)")
    config = sample_config(sampling)  # a bad flag is told before torch loads
    learning = learn_config(sampling, learn, "--learn")
    if learn and bf16:
        raise ChargenError("--learn takes gradient steps in fp32: drop --bf16 or --learn")
    prime = "".join(read_chunks(corpus_files(prime_file))) if prime_file else unescape(as_text("prime", prime))
    import torch

    from chargen.generate import Generator

    dtype = torch.bfloat16 if bf16 else torch.float32
    generator = Generator.load(resolve_checkpoint(checkpoint), device, dtype)
    learner = None
    if learn:
        from chargen.dynamic import Learner

        learner = Learner(generator.model, learning)  # this process's copy of the weights; the file stays
    if generator.line_state is not None:
        return write_lines(generator, config, prime, num_samples, learner, mark, new_only)
    if mark or new_only:
        raise ChargenError("--mark and --new-only are for line-mode models (trained with chargen train FILE --lines)")
    primed = generator.prime(prime, batch=num_samples, learner=learner)
    if primed.unknown:
        console.warn(f"the prime has characters the model never saw, left out: {' '.join(map(repr, primed.unknown))}")
    texts = [prime] * num_samples
    if num_samples == 1:
        console.write(prime)
    for b, text in generator.stream(primed, config):
        if num_samples == 1:
            console.write(text)
        else:
            texts[b] += text
    if num_samples == 1:
        console.write("\n")
    for b, text in enumerate(texts if num_samples > 1 else []):
        console.write(f"{'' if b == 0 else chr(10)}--- sample {b + 1} of {num_samples} ---\n{text}\n")


def write_lines(generator, config, prime: str, n: int, learner, mark: bool, new_only: bool) -> None:
    """A line-mode model's samples: one line each, marked new, in train or in val."""
    from collections import Counter

    from chargen.cli import console

    lines = generator.sample_lines(config, prime, n, learner)
    sets = generator.checkpoint.lines
    marks = [sets.mark(line) if sets is not None else "unknown" for line in lines]
    for line, seen in zip(lines, marks):
        if not new_only or seen == "new":
            console.write(f"{seen}\t{line}\n" if mark else f"{line}\n")
    counts = Counter(marks)
    console.info(f"{n} lines: " + ", ".join(f"{counts[m]} {m}" for m in ("new", "in train", "in val") if counts[m]))
