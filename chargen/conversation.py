"""A conversation with a model: the hidden state carried across turns, with undo, reset, save and load.

Each turn feeds the person's text through the model (it becomes context), then the model
writes until a stop string, a length limit or an interruption. Nothing is ever re-read:
the recurrent state *is* the memory of the whole conversation, at constant cost per character.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from chargen import checkpoint
from chargen.config import SampleConfig
from chargen.errors import ChargenError
from chargen.generate import Generator, Primed


@dataclass
class Framing:
    """How a turn is framed for a dialogue corpus: e.g. user 'ROMEO:\\n', bot 'JULIET:\\n'."""

    user_prefix: str = ""
    bot_prefix: str = ""


def chats_dir() -> Path:
    home = os.environ.get("CHARGEN_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "chargen"
    )
    return Path(home) / "chats"


def chat_path(name: str) -> Path:
    """A bare NAME lives in the chats folder; anything with a slash or .pt is a path."""
    if "/" in name or name.endswith(".pt"):
        return Path(name)
    return chats_dir() / f"{name}.pt"


@dataclass
class Conversation:
    generator: Generator
    config: SampleConfig = field(default_factory=SampleConfig)
    framing: Framing = field(default_factory=Framing)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A fresh hidden state and an empty transcript."""
        self.primed: Primed | None = None
        self.text = ""  # everything the model has read or written, in order
        self.turns = 0  # answers so far: a set seed is offset by it, so turns differ yet replay exactly
        self._undo: list[tuple[Primed | None, str, int]] = []

    # -- a turn --------------------------------------------------------------------------------

    def feed(self, line: str) -> list[str]:
        """Read the person's line into the state; returns the characters the model never saw."""
        self._undo.append((self._snapshot(), self.text, self.turns))
        text = f"{self.framing.user_prefix}{line.removesuffix(chr(10))}\n{self.framing.bot_prefix}"
        if self.text and not self.text.endswith("\n"):
            text = "\n" + text  # a turn starts on a new line
        self.primed = self.generator.prime(text, primed=self.primed)
        self.text += text
        return self.primed.unknown

    def answer(self) -> Iterator[str]:
        """The model's reply, piece by piece; an interruption leaves the state where the text stopped."""
        assert self.primed is not None, "feed() comes first"
        config = self.config if self.config.seed is None else replace(self.config, seed=self.config.seed + self.turns)
        self.turns += 1
        for _, piece in self.generator.stream(self.primed, config):
            self.text += piece
            yield piece

    def undo(self) -> bool:
        """Back to the state before the last turn; False when there is none."""
        if not self._undo:
            return False
        self.primed, self.text, self.turns = self._undo.pop()
        return True

    def _snapshot(self) -> Primed | None:
        p = self.primed
        return None if p is None else Primed(tuple(s.clone() for s in p.state), p.logits.clone())

    # -- settings ------------------------------------------------------------------------------

    def set(self, key: str, value) -> None:
        """Change one sampling setting; a bad value raises SettingError and changes nothing."""
        self.config = replace(self.config, **{key: value})

    # -- save and load -------------------------------------------------------------------------

    def save(self, name: str) -> Path:
        path = chat_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(
            {
                "kind": "chat",
                "model": self._model_id(),
                "text": self.text,
                "turns": self.turns,
                "state": list(self.primed.state) if self.primed else None,
                "logits": self.primed.logits if self.primed else None,
                "config": {**self.config.to_dict(), "stop": list(self.config.stop)},
                "framing": self.framing.__dict__,
            },
            path,
        )
        return path

    def load(self, name: str) -> Path:
        path = chat_path(name)
        if not path.exists():
            raise ChargenError(f"no saved conversation {name!r} (looked for {path}); /save NAME makes one")
        data = checkpoint.load(path, kind="chat")
        if data["model"] != self._model_id():
            raise ChargenError(f"{path} was saved with another model: its hidden state means nothing to this one")
        self.reset()
        self.text, self.turns = data["text"], data["turns"]
        self.config = SampleConfig.from_dict({**data["config"], "stop": tuple(data["config"]["stop"])})
        self.framing = Framing(**data["framing"])
        if data["state"] is not None:
            device = self.generator.device
            self.primed = Primed(tuple(s.to(device) for s in data["state"]), data["logits"].to(device))
        return path

    def _model_id(self) -> str:
        """Tells models apart: a hash of the weights' first and last tensors and the tokenizer."""
        params = list(self.generator.model.state_dict().values())
        return checkpoint.checksum([params[0][:4], params[-1], self.generator.tokenizer.fingerprint()])
