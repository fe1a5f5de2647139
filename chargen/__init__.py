"""chargen: character-level language models (stateful LSTM, GRU, RNN) trained on any text.

    import chargen
    result = chargen.train("corpora/tinyshakespeare.txt", time=300)
    model = chargen.load(result.best_path)
    print("".join(model.generate("ROMEO:", length=200, temp=0.8, seed=1)))

Importing chargen is cheap: torch loads when a model does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from chargen.config import DEFAULT_DEVICE

if TYPE_CHECKING:
    from chargen.generate import Generator
    from chargen.training.trainer import Result

__version__ = "0.1.0"
__all__ = ["load", "train", "__version__"]


def load(path: str | os.PathLike, device: str = DEFAULT_DEVICE) -> Generator:
    """A trained model from a checkpoint, ready to `generate(prime, length, temp, top_k, top_p, seed, stop)`."""
    from chargen.generate import Generator

    return Generator.load(path, device)


def train(corpus: str | os.PathLike | None = None, **kwargs) -> Result:
    """Train a model on `corpus` (a text file or a folder), as `chargen train` does; returns its checkpoints.

    Keyword arguments: `out`, `resume`, `overwrite`, `corpus_changed`, `reporter`, and any model or
    training setting by name (`hidden=512`, `time=600`, `steps=2000`, ...): see `chargen.training.run.train`."""
    from chargen.training.run import train as run_train

    return run_train(corpus, **kwargs)
