"""chargen: character-level language models (stateful LSTM, GRU, RNN) trained on any text.

    import chargen
    model = chargen.load("checkpoints/tinyshakespeare/best.pt")
    print("".join(model.generate("ROMEO:", length=200, temp=0.8, seed=1)))

Importing chargen is cheap: torch loads when a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chargen.generate import Generator

__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def load(path: str, device: str = "cpu") -> Generator:
    """A trained model from a checkpoint, ready to `generate(prime, length, temp, top_k, top_p, seed)`."""
    from chargen.generate import Generator

    return Generator.load(path, device)
