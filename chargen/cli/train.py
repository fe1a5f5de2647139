"""`chargen train CORPUS`: train a model and write best.pt, last.pt and metrics.jsonl."""

from __future__ import annotations

import math
import shlex

import click

from chargen.cli import cli
from chargen.config import (
    CELLS,
    DEFAULT_TIME,
    DEVICES,
    EVAL_EVERY,
    EVALS,
    LINE_STATES,
    SIZES,
    SP_MODELS,
    TOKENIZERS,
    ModelConfig,
    TrainConfig,
    format_duration,
    parse_duration,
)

M, T = ModelConfig, TrainConfig


def _auto(default) -> str:
    return f"chosen by --size auto; {default} with --size fixed"


def _duration(ctx, param, value):
    return None if value is None else parse_duration(value)


@cli.command(context_settings={"show_default": True})
@click.argument("corpus", type=click.Path(), required=False)
@click.option(
    "-o", "--out", type=click.Path(file_okay=False), help="Output folder  [default: checkpoints/<corpus name>/]"
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    help="Continue the run saved in this checkpoint (last.pt); budget flags given with it replace the run's "
    "budget, counted from the run's start.",
)
@click.option(
    "--from",
    "parent",
    type=click.Path(),
    help="Start from this model (a checkpoint, or shakespeare for the bundled one): a new run that keeps its shape "
    "and vocabulary, adds this text's new characters and records where it came from; the rest is chosen as for a "
    "run from scratch.",
)
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default=T.size,
    help="auto chooses the model size, batch, dropout and lr that no flag gives, from the budget, the corpus and "
    "a few timed steps on this device; fixed keeps the defaults below.",
)
@click.option("--cell", type=click.Choice(CELLS), default=M.cell, help="Recurrent cell.")
@click.option("--layers", type=int, default=M.layers, show_default=_auto(M.layers), help="Recurrent layers.")
@click.option("--hidden", type=int, default=M.hidden, show_default=_auto(M.hidden), help="Units per layer.")
@click.option("--embed", type=int, default=M.embed, show_default=_auto(M.embed), help="Embedding width.")
@click.option(
    "--dropout",
    type=float,
    default=M.dropout,
    show_default=_auto(M.dropout),
    help="Dropout on embedding, between layers and before the head.",
)
@click.option(
    "--locked-dropout/--no-locked-dropout",
    "locked",
    default=M.locked,
    show_default=_auto(M.locked),
    help="One dropout mask per stream and window, the same at every step.",
)
@click.option(
    "--weight-drop",
    type=float,
    default=M.weight_drop,
    show_default=_auto(M.weight_drop),
    help="DropConnect on the recurrent weights, a mask per batch.",
)
@click.option(
    "--embed-drop",
    type=float,
    default=M.embed_drop,
    show_default=_auto(M.embed_drop),
    help="Drop whole characters' embeddings, a mask per batch.",
)
@click.option(
    "--batch-size",
    type=int,
    default=T.batch_size,
    show_default=_auto(T.batch_size),
    help="Contiguous streams trained side by side.",
)
@click.option(
    "--seq-len",
    type=int,
    default=T.seq_len,
    show_default=_auto(T.seq_len),
    help="Characters per truncated-BPTT window.",
)
@click.option("--lr", type=float, default=T.lr, show_default=_auto(T.lr), help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=float, default=T.weight_decay, help="AdamW weight decay on matrices.")
@click.option(
    "--average",
    type=float,
    default=T.average,
    show_default=_auto(T.average),
    help="Keep a moving average of the weights (this much kept per step, e.g. 0.999); 0 is off.",
)
@click.option(
    "--ar",
    type=float,
    default=T.ar,
    show_default=_auto(T.ar),
    help="Activation regularisation: this times the mean square of the last layer's output, added to the loss.",
)
@click.option(
    "--tar",
    type=float,
    default=T.tar,
    show_default=_auto(T.tar),
    help="Temporal activation regularisation: the same of its change from step to step.",
)
@click.option("--grad-clip", type=float, default=T.grad_clip, help="Clip the gradient norm to this; 0 is off.")
@click.option("--warmup", type=int, default=T.warmup, help="Warm-up steps before the cosine decay.")
@click.option("--steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--epochs", type=float, default=None, help="Stop after this many passes over the text.")
@click.option(
    "--time",
    "time_",
    metavar="DURATION",
    callback=_duration,
    default=None,
    show_default=False,
    help=f"Stop after this much wall-clock time: 90s, 10m, 2h  [default: {DEFAULT_TIME} when no --steps or --epochs]",
)
@click.option(
    "--eval-every",
    type=int,
    default=T.eval_every,
    help=f"Steps between validation passes [default: {EVAL_EVERY}, and each {EVALS}th of the budget while cheap].",
)
@click.option("--patience", type=int, default=None, help="Stop after N evaluations with no better val loss.")
@click.option("--val-frac", type=float, default=T.val_frac, help="Last fraction of the text held out for validation.")
@click.option(
    "--val-chars", type=int, default=T.val_chars, help="Hold out at most this many characters (the last of the text)."
)
@click.option("--seed", type=int, default=T.seed, help="Seed for weights, dropout and data offsets.")
@click.option("--device", type=click.Choice(DEVICES), default=T.device, help="auto picks a GPU when there is one.")
@click.option("--amp/--no-amp", default=T.amp, help="bf16 autocast on a GPU.")
@click.option(
    "--tokenizer", type=click.Choice(TOKENIZERS), default=T.tokenizer, help="char, or sp for SentencePiece subwords."
)
@click.option("--vocab-size", type=int, default=T.vocab_size, help="SentencePiece vocabulary size.")
@click.option("--sp-model", type=click.Choice(SP_MODELS), default=T.sp_model, help="SentencePiece model type.")
@click.option("--lines", is_flag=True, help="Each line is one example (a list of names, words, titles).")
@click.option(
    "--line-state",
    type=click.Choice(LINE_STATES),
    default=T.line_state,
    help="With --lines: carry the state from line to line (better, measured), or read each from a fresh state.",
)
@click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoints are deleted).")
@click.option("--corpus-changed", is_flag=True, help="Resume although CORPUS is not the text the run was trained on.")
@click.pass_context
def train(ctx: click.Context, corpus: str | None, out: str | None, resume: str | None, parent, time_, **flags) -> None:
    """Train a model on CORPUS (a UTF-8 text file, or a folder of them).

    A new run never replaces another: the default folder moves on to checkpoints/NAME-2/.

    \b
      chargen train corpora/tinyshakespeare.txt               # 5 minutes
      chargen train novel.txt --time 30m --hidden 768
      chargen train code/ --steps 5000 --cell gru
      chargen train names.txt --lines                         # one example per line
      chargen train letters.txt --from shakespeare --time 1m  # fine-tune the bundled model
      chargen train --resume checkpoints/novel/last.pt --time 10m
    """
    from chargen.cli import console
    from chargen.cli.progress import TrainProgress
    from chargen.training import run

    overwrite, corpus_changed = flags.pop("overwrite"), flags.pop("corpus_changed")
    flags["time"] = time_
    given = {
        k: v for k, v in flags.items() if ctx.get_parameter_source("time_" if k == "time" else k).name != "DEFAULT"
    }
    reporter = TrainProgress()
    trainer = run.prepare(
        corpus,
        out=out,
        resume=resume,
        parent=parent,
        overwrite=overwrite,
        corpus_changed=corpus_changed,
        reporter=reporter,
        **given,
    )
    if not trainer.ranks.main:  # a rank of a torchrun run: rank 0 speaks for all
        result = trainer.run(exit_on_second_interrupt=True)
        ctx.exit(130 if result.interrupted else 0)
    config, data = trainer.config, trainer.corpus
    parts = [f"{config.steps:,} steps"] if config.steps else []
    parts += [f"{config.epochs:g} epochs"] if config.epochs else []
    parts += [f"{format_duration(config.time)} of wall-clock time"] if config.time else []
    held = (
        f"{len(data.lines.train):,} distinct training and {len(data.lines.val):,} validation lines "
        f"(a random {config.val_frac:g}), each from a {config.line_state} state, "
        if data.lines is not None
        else ""
    )
    console.info(
        f"{'resuming' if resume else 'fine-tuning' if parent else 'training'} a {trainer.model_config.summary()} "
        f"({trainer.model.num_parameters():,} parameters) on {data.name}: {held}"
        f"{data.train_chars:,} training and {data.val_chars:,} validation characters, "
        f"vocabulary {data.tokenizer.vocab_size:,} ({data.tokenizer.kind}), on {trainer.device.type}"
    )
    default = "" if set(given) & set(run.BUDGET) or resume else " (the default; set --time, --steps or --epochs)"
    console.info(f"budget: {' or '.join(parts)}{default}; writing to {trainer.out}/")

    result = trainer.run(exit_on_second_interrupt=True)
    best = result.best_val
    if result.interrupted:
        console.warn(
            f"interrupted at step {result.step}; saved {result.last_path}. "
            f"Continue with: chargen train --resume {_quoted(result.last_path)}"
        )
    if math.isfinite(best):
        stopped = " (stopped early: no better val loss)" if result.stopped_early else ""
        console.stderr().print(
            f"best val {best:.4f} nats/char ([bold]{best / math.log(2):.4f} bpc[/]) at step {result.best_step:,} "
            f"of {result.step:,}{stopped}",
            highlight=False,
        )
        console.info(f"checkpoint: {result.best_path}\nsample from it: chargen sample -c {_quoted(result.best_path)}")
    if result.interrupted:
        ctx.exit(130)


def _quoted(path) -> str:
    """A path as a shell reads it back: quoted when it holds spaces or other special characters."""
    return shlex.quote(str(path))
