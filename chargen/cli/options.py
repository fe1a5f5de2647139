"""Options that several commands share, each written once, its default read from the config dataclasses."""

from __future__ import annotations

from dataclasses import fields

import click

from chargen.config import DEFAULT_DEVICE, DEVICES, LearnConfig, SampleConfig
from chargen.errors import SettingError


def checkpoint_option(f):
    return click.option(
        "-c",
        "--checkpoint",
        type=click.Path(),  # a folder is refused by the loader, which also says when it hides a bundled model
        help="Checkpoint to load, or 'shakespeare' for the bundled model  [default: the newest best.pt under "
        "checkpoints/, else the bundled model]",
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
    """The sampling settings, shared by `sample` and `chat`: each reaches the command as a keyword argument
    named as in SampleConfig, and `sample_config(settings)` makes them one."""
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
            click.option(
                "--min-p", type=float, default=None, help="Only tokens at least P times as likely as the top."
            ),
            _setting(
                "--repeat-penalty",
                float,
                "Make tokens seen in the last --repeat-window this much less likely; 1 is off.",
            ),
            _setting("--repeat-window", int, "Tokens the penalties look back over."),
            _setting("--presence-penalty", float, "Lower each token seen in the window by this (-2 to 2)."),
            _setting("--frequency-penalty", float, "Lower each token by this times its count in the window (-2 to 2)."),
            click.option("-l", "--length", type=int, default=d.length, show_default=True, help="Characters to write."),
            click.option("--seed", type=int, default=None, help="Seed of the draw: same seed, same text."),
            click.option("--stop", multiple=True, help="Stop when this string appears (repeatable); \\n escapes work."),
        ]
    ):
        f = option(f)
    return f


def _setting(flag: str, kind: type, help: str):
    """An option for a SampleConfig field, with the field's default."""
    default = getattr(SampleConfig, flag.removeprefix("--").replace("-", "_"))
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


SAMPLING = tuple(f.name for f in fields(SampleConfig))  # each has its flag in `sampling_options`


def sample_config(flags: dict, default_stop: tuple[str, ...] = ()) -> SampleConfig:
    """The SampleConfig of the sampling flags in `flags` (which it removes from it); escapes in --stop read."""
    from chargen.config import unescape

    settings = {name: flags.pop(name) for name in SAMPLING}
    settings["stop"] = tuple(map(unescape, settings["stop"])) or default_stop
    return SampleConfig(**settings)


def resolve_checkpoint(path: str | None):
    from pathlib import Path

    from chargen import checkpoint
    from chargen.cli import console
    from chargen.errors import CheckpointError

    if path:
        return Path(path)
    try:
        found = checkpoint.newest()
    except CheckpointError:
        if (found := checkpoint.bundled("shakespeare")) is None:
            raise
        console.info(
            "no trained model under checkpoints/: using the bundled tiny shakespeare model "
            "(train your own with: chargen train FILE)"
        )
        return found
    console.info(f"using {found} (the newest best.pt; pick another with -c)")
    return found


def learn_options(f):
    """--learn-rate --learn-window --learn-decay: how a model learns as it reads (eval --dynamic, --learn)."""
    d = LearnConfig
    for option in reversed(
        [
            click.option("--learn-rate", type=float, default=d.learn_rate, show_default=True, help="Step size."),
            click.option(
                "--learn-window", type=int, default=d.learn_window, show_default=True, help="Tokens read per step."
            ),
            click.option(
                "--learn-decay",
                type=float,
                default=d.learn_decay,
                show_default=True,
                help="Pull back toward the trained weights per step.",
            ),
        ]
    ):
        f = option(f)
    return f


def learn_config(flags: dict, learning: bool, switch: str) -> LearnConfig:
    """The LearnConfig of the learning flags in `flags` (which it removes from it); one typed without `switch`,
    the flag that turns learning on, would change nothing, so it is refused."""
    from click.core import ParameterSource

    names = ("learn_rate", "learn_window", "learn_decay")
    typed = [n for n in names if click.get_current_context().get_parameter_source(n) is ParameterSource.COMMANDLINE]
    if typed and not learning:
        flag = "--" + typed[0].replace("_", "-")
        raise SettingError(f"{flag} takes effect only with {switch}: add {switch}, or leave {flag} out")
    return LearnConfig(**{name: flags.pop(name) for name in names})
