"""Options that several commands share, each written once, its default read from the config dataclasses."""

from __future__ import annotations

import click

from chargen.config import DEFAULT_DEVICE, DEVICES, SampleConfig


def checkpoint_option(f):
    return click.option(
        "-c",
        "--checkpoint",
        type=click.Path(dir_okay=False),
        help="Checkpoint to load  [default: the newest best.pt under checkpoints/]",
    )(f)


def device_option(f):
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=DEFAULT_DEVICE,
        show_default=True,
        help="Where the model runs; auto picks a GPU when there is one.",
    )(f)


def sampling_options(f):
    """-t -k -p -l --seed --stop, shared by `sample` and `chat`."""
    d = SampleConfig
    for option in reversed(
        [
            click.option(
                "-t", "--temp", type=float, default=d.temp, show_default=True, help="Temperature; 0 is greedy."
            ),
            click.option("-k", "--top-k", type=int, default=None, help="Sample from the k most likely tokens only."),
            click.option(
                "-p", "--top-p", type=float, default=None, help="Nucleus sampling: the smallest set of mass p."
            ),
            click.option("-l", "--length", type=int, default=d.length, show_default=True, help="Characters to write."),
            click.option("--seed", type=int, default=None, help="Seed of the draw: same seed, same text."),
            click.option("--stop", multiple=True, help="Stop when this string appears (repeatable); \\n escapes work."),
        ]
    ):
        f = option(f)
    return f


def sample_config(temp, top_k, top_p, length, seed, stop) -> SampleConfig:
    from chargen.config import unescape

    return SampleConfig(temp=temp, top_k=top_k, top_p=top_p, length=length, seed=seed, stop=tuple(map(unescape, stop)))


def resolve_checkpoint(path: str | None):
    from pathlib import Path

    from chargen import checkpoint, console

    if path:
        return Path(path)
    found = checkpoint.newest()
    console.info(f"using {found} (the newest best.pt; pick another with -c)")
    return found
