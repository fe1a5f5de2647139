"""Setting up a training run, shared by `chargen train` and `chargen.train()`: settings, resume, folder, corpus.

`prepare` turns what a person asked for (a corpus, an output folder, a checkpoint to resume,
and any model or training settings by name) into a ready `Trainer`:

- a new run takes its settings from the defaults in `chargen.config`, overridden by those given;
- a resumed run keeps the settings it was trained with; a setting given again with the same
  value is accepted, one that shapes the model or the data and differs is refused with both
  values, and budget settings replace the run's budget (counted from the run's start);
- a fine-tuned run (`parent`, `--from`) is a new run whose weights start as the parent's: it keeps the
  parent's shape and tokenizer (a setting that disagrees is refused), grows a char vocabulary by the
  text's new characters, and records its lineage;
- a new run never replaces another run's checkpoints: the default folder moves on to
  `checkpoints/<name>-2/` (and so on), and a folder given with `out` that holds a run is
  refused unless `overwrite` is set;
- the corpus is encoded with the run's own tokenizer on resume, and must be the same text.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from chargen import checkpoint
from chargen.config import ModelConfig, TrainConfig, as_path
from chargen.errors import ChargenError, CheckpointError, SettingError
from chargen.training import finetune
from chargen.training.distributed import setup
from chargen.training.trainer import Reporter, Result, Trainer

BUDGET = ("steps", "epochs", "time")
# Settings a resumed run may change; the rest shape the model or the data and stay as trained.
RESUMABLE = (
    *BUDGET,
    "eval_every",
    "patience",
    "device",
    "amp",
    "lr",
    "min_lr_frac",
    "weight_decay",
    "grad_clip",
    "warmup",
    "size",
)
MODEL_SETTINGS = tuple(f.name for f in fields(ModelConfig))
TRAIN_SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("chosen", "planned_speed"))  # the run's
RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")  # a folder holding any of these holds a run


def train(corpus: str | os.PathLike | None = None, **kwargs) -> Result:
    """Train a model on `corpus` (a text file or a folder) and return where its checkpoints are.

    Keyword arguments are those of `prepare`: `out`, `resume`, `parent` (a checkpoint, or `shakespeare`, to
    fine-tune), `overwrite`, `corpus_changed`, `reporter`, and any of ModelConfig's and TrainConfig's fields
    (hidden=512, time=600, ...), with the same defaults and meaning as the flags of `chargen train`."""
    return prepare(corpus, **kwargs).run()


def prepare(
    corpus: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    parent: str | os.PathLike | None = None,
    overwrite: bool = False,
    corpus_changed: bool = False,
    reporter: Reporter | None = None,
    **settings,
) -> Trainer:
    """A Trainer for the run that these arguments describe (see the module's docstring)."""
    reporter = reporter or Reporter()
    corpus, out, resume = (
        None if v is None else as_path(k, v) for k, v in (("corpus", corpus), ("out", out), ("resume", resume))
    )
    known = MODEL_SETTINGS + TRAIN_SETTINGS
    for name in settings:
        if name not in known:
            raise SettingError(f"{name} is not a setting; the settings are {', '.join(known)}", name)
    if parent is not None and resume is not None:
        raise ChargenError("--from starts a new run and --resume continues one: give one of them")
    saved = checkpoint.read(resume) if resume is not None else None
    base = checkpoint.read(parent) if parent is not None else None
    if saved:
        model_config, config = resumed_configs(saved, settings)
        corpus = corpus if corpus is not None else saved.corpus.path
        out = out if out is not None else Path(resume).parent  # type: ignore[arg-type]
    elif base:
        finetune.check_kept(base, settings, str(parent))
        model_config = finetune.shape_of(base, settings)
        kept = {k: getattr(base.train_config, k) for k in finetune.TOKENIZING}
        config = TrainConfig(**{**kept, **{k: v for k, v in settings.items() if k in TRAIN_SETTINGS}})
    else:
        model_config = ModelConfig(**{k: v for k, v in settings.items() if k in MODEL_SETTINGS})
        config = TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    if corpus is None:
        raise ChargenError("give the text to train on: chargen train CORPUS (a file or a folder)")
    ranks = setup(config.device)  # one process, or a rank of a torchrun run
    if not ranks.main:
        reporter = Reporter()  # one process talks
    elif ranks.world > 1:
        reporter.note(f"torchrun: training on {ranks.world} processes ({ranks.backend} backend)")
    # rank 0 chooses the folder and encodes the corpus; the others then find both ready
    out_dir = ranks.broadcast(output_folder(corpus, out, resume, overwrite, reporter) if ranks.main else None)
    own, grown_from = (saved.tokenizer if saved else None), (base.tokenizer if base else None)
    if ranks.main:
        data = load_corpus_for(corpus, config, own, reporter, base=grown_from)
    ranks.barrier()
    if not ranks.main:
        data = load_corpus_for(corpus, config, own, reporter, base=grown_from)
    for line in data.skipped:
        reporter.note(line)
    measured = 0.0
    if base and config.size == "auto":
        model_config, config, measured = shaped(data, model_config, config, settings, reporter, "fine-tuning")
    elif not saved and config.size == "auto":
        model_config, config, measured = sized(data, model_config, config, settings, ranks, reporter)
    if saved and saved.corpus.fingerprint not in (None, data.fingerprint):
        if not corpus_changed:
            raise CheckpointError(
                f"{corpus} is not the text this run was trained on (same length, different characters): "
                "resume with the run's own corpus, or pass --corpus-changed to go on with this one"
            )
        reporter.note(f"{corpus} differs from the text this run was trained on: going on, as asked")
    start, lineage = None, None
    if base:
        added = data.tokenizer.vocab_size - base.vocab_size
        start = finetune.grown_weights(base.weights, data.tokenizer.vocab_size, config.seed)
        lineage = finetune.lineage(base, str(parent), added)
        reporter.note(f"--from {parent}: {base.describe()}; {_added(data.tokenizer, base.vocab_size)}")
    trainer = Trainer(
        data, model_config, config, out_dir, reporter=reporter, resume=saved, ranks=ranks, start=start, lineage=lineage
    )
    if measured:
        trainer.position.elapsed = measured  # the seconds spent timing candidates count against a time budget
    return trainer


def sized(data, model_config: ModelConfig, config: TrainConfig, given: dict, ranks, reporter: Reporter):
    """The configs with what `--size auto` chose for the settings not `given`, and the seconds it spent."""
    from chargen.model import resolve_device
    from chargen.training import sizing

    if ranks.world > 1:
        if not all(k in given for k in sizing.SIZE_KEYS):
            reporter.note("a torchrun run trains the default size: give --layers and --hidden to choose another")
        return model_config, config, 0.0
    if all(k in given for k in sizing.SIZE_KEYS):
        return shaped(data, model_config, config, given, reporter, f"the {model_config.summary()} asked for")
    device = resolve_device(config.device).type
    if config.time:
        reporter.note(f"--size auto: timing a few training steps of each candidate model on this {device.upper()}")
    choice = sizing.choose(
        given,
        corpus_chars=data.train_chars,
        chars_per_token=data.train_chars / len(data.train),
        device_type=device,
        steps=config.steps,
        epochs=config.epochs,
        time=config.time,
        speed=lambda settings: measure(data, settings, model_config, config),
    )
    if choice is None:
        return model_config, config, 0.0
    reporter.note(f"--size auto chose {choice.why}")
    return applied(choice, model_config, config)


def shaped(data, model_config: ModelConfig, config: TrainConfig, given: dict, reporter: Reporter, what: str):
    """The configs with what `--size auto` chose for a run whose shape is settled (`what`: by both size flags, or
    as a fine-tuned run's parent's): its batch, lr and regularisers; and the seconds it spent timing it."""
    from chargen.model import resolve_device
    from chargen.training import sizing

    shape = {"layers": model_config.layers, "hidden": model_config.hidden, "embed": model_config.embed}
    choice = sizing.around_shape(
        given,
        layers=model_config.layers,
        hidden=model_config.hidden,
        corpus_chars=data.train_chars,
        chars_per_token=data.train_chars / len(data.train),
        device_type=resolve_device(config.device).type,
        steps=config.steps,
        epochs=config.epochs,
        time=config.time,
        speed=lambda settings: measure(data, {**shape, **settings}, model_config, config),
    )
    reporter.note(f"--size auto chose, for {what}, {choice.why}")
    return applied(choice, model_config, config)


def applied(choice, model_config: ModelConfig, config: TrainConfig):
    """The configs with `choice`'s settings in them and its reasons recorded, and the seconds it spent timing."""
    from dataclasses import replace

    model_keys = set(MODEL_SETTINGS)
    model_config = replace(model_config, **{k: v for k, v in choice.settings.items() if k in model_keys})
    chosen = {k: v for k, v in choice.settings.items() if k not in model_keys}
    config = replace(config, **chosen, chosen=choice.why, planned_speed=choice.rate)
    return model_config, config, choice.measured_s


def _added(tokenizer, old: int) -> str:
    """'3 characters of this text were new to it, added: é, ñ, ß' (or that none were, or its pieces were kept)."""
    if tokenizer.kind != "char":
        return "its pieces are kept (byte fallback reads any text)"
    new = tokenizer.chars[old:]
    if not new:
        return "every character of this text was in its vocabulary"
    shown = ", ".join(repr(c)[1:-1] for c in new[:20]) + (", ..." if len(new) > 20 else "")
    if len(new) == 1:
        return f"1 character of this text was new to it, added: {shown}"
    return f"{len(new)} characters of this text were new to it, added: {shown}"


def resumed_configs(saved: checkpoint.ModelCheckpoint, settings: dict) -> tuple[ModelConfig, TrainConfig]:
    """The run's own configs, with the settings that may change on resume replaced by those given."""
    kept_model, kept = saved.model_config.to_dict(), saved.train_config.to_dict()
    for name, value in settings.items():
        old = kept_model[name] if name in MODEL_SETTINGS else kept[name]
        if value != old and name not in RESUMABLE:
            raise SettingError(f"{name} was {old!r} in this run, not {value!r}; drop it, or start a new run", name)
    if any(name in BUDGET for name in settings):
        kept.update(dict.fromkeys(BUDGET))
    kept.update({k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    return ModelConfig(**kept_model), TrainConfig(**kept)


def output_folder(corpus, out, resume, overwrite: bool, reporter: Reporter) -> Path:
    """Where the run writes: never over another run's checkpoints unless told to."""
    if out is None:
        base = Path("checkpoints") / (Path(corpus).stem or "corpus")
        folder, n = base, 1
        while holds_run(folder):
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        if n > 1:
            reporter.note(f"{base}/ holds an earlier run, kept as it is: this one writes to {folder}/")
    else:
        folder = Path(out)
        resuming_here = resume is not None and folder.resolve() == Path(resume).resolve().parent
        if holds_run(folder) and not resuming_here:
            if not overwrite:
                raise ChargenError(
                    f"{folder}/ already holds a run: continue it with "
                    f"`chargen train --resume {_quote(folder / 'last.pt')}`, replace it with --overwrite, "
                    "or choose another folder with --out"
                )
            for name in RUN_FILES:
                (folder / name).unlink(missing_ok=True)
            reporter.note(f"{folder}/ held a run: replaced, as --overwrite asked")
    check_writable(folder)
    return folder


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def load_corpus_for(corpus, config: TrainConfig, tokenizer=None, reporter: Reporter | None = None, base=None):
    """The corpus encoded as `config` says: with `tokenizer` when given (a resumed run's own), with `base` grown
    for it (a fine-tuned run's parent's), else a new vocabulary of characters or, for tokenizer 'sp',
    SentencePiece pieces fitted to its training part."""
    from chargen.data import load_corpus

    fit, key = None, "char"
    if tokenizer is None and base is None and config.tokenizer == "sp":
        from chargen.subword import fitter

        fit, key = fitter(config.vocab_size, config.sp_model, (reporter or Reporter()).note)
    reporter = reporter or Reporter()
    return load_corpus(
        corpus,
        config.val_frac,
        tokenizer=tokenizer,
        fit=fit,
        fit_key=key,
        lines=config.lines,
        val_chars=config.val_chars,
        progress=reporter.reading,
        base=base,
    )


def check_writable(folder: Path) -> None:
    """Fail now, not after training, if `folder` cannot be written; create nothing (a typo leaves no folder)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ChargenError(f"cannot write to {folder} ({e.strerror}): choose another folder with --out") from None


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def measure(corpus, settings: dict, model_config: ModelConfig, config: TrainConfig) -> float:
    """Training chars/s on `corpus` of the model and batch in `settings` (the rest as in the configs given):
    real trainer steps after a warm-up, in a trainer whose folder is thrown away (it writes nothing there)."""
    import tempfile
    import time
    from dataclasses import replace

    import torch

    from chargen.training.sizing import MODEL_KEYS, TRAIN_KEYS

    model = replace(model_config, **{k: settings[k] for k in MODEL_KEYS})
    train = replace(config, **{k: settings[k] for k in TRAIN_KEYS})
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(corpus, model, train, out)
        cuda = trainer.device.type == "cuda"

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(trainer.device)

        for _ in range(3 if cuda else 4):  # the first steps set up kernels and memory, and run slower: not timed
            trainer.step()
        sync()
        start, before, steps = time.perf_counter(), trainer.tokens_read, 0
        while steps < (10 if cuda else 2) or time.perf_counter() - start < 1.0:
            trainer.step()
            steps += 1
            sync()
        return (trainer.tokens_read - before) * trainer.chars_per_token / (time.perf_counter() - start)
