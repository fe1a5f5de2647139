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

import torch

from chargen import checkpoint
from chargen.config import CHAT_STOP, MAX_SEED, SampleConfig, as_text
from chargen.errors import ChargenError, SettingError
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
    """Where the conversation called `name` lives: always inside the chats folder, whatever the name."""
    if not isinstance(name, str) or not name or len(name) > 100 or name.startswith("."):
        raise ChargenError(f"{name!r} is not a name for a conversation: use letters, digits, - and _")
    if any(c in name for c in "/\\\0") or any(not c.isprintable() for c in name):
        raise ChargenError(
            f"{name!r} is not a name for a conversation (no slashes or control characters): "
            f"conversations are kept in {chats_dir()}"
        )
    return chats_dir() / f"{name.removesuffix('.pt')}.pt"


@dataclass
class Conversation:
    generator: Generator
    config: SampleConfig = field(default_factory=lambda: SampleConfig(stop=CHAT_STOP))
    framing: Framing = field(default_factory=Framing)

    def __post_init__(self) -> None:
        if not isinstance(self.config, SampleConfig):
            raise SettingError(f"config must be a SampleConfig, not {self.config!r}", "config")
        as_text("user_prefix", self.framing.user_prefix)
        as_text("bot_prefix", self.framing.bot_prefix)
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
        as_text("line", line)
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
        seed = self.config.seed
        config = self.config if seed is None else replace(self.config, seed=(seed + self.turns) % (MAX_SEED + 1))
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
        self.config = SampleConfig.of(**{**self.config.to_dict(), key: value})

    # -- save and load -------------------------------------------------------------------------

    def save(self, name: str, overwrite: bool = False) -> Path:
        """Keep the conversation as `name` in the chats folder; an existing one only with `overwrite`."""
        path = chat_path(name)
        if path.exists() and not overwrite:
            raise ChargenError(f"a conversation called {name!r} exists already: /save! {name} replaces it")
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
        """Continue the conversation saved as `name`; a file that does not fit this model changes nothing."""
        path = chat_path(name)
        if not path.exists():
            raise ChargenError(f"no saved conversation {name!r} (looked for {path}); /save NAME makes one")
        data = checkpoint.load(path, kind="chat")
        if data.get("model") != self._model_id():
            raise ChargenError(f"{path} was saved with another model: its hidden state means nothing to this one")
        try:
            text, turns, primed = data["text"], data["turns"], self._primed(data["state"], data["logits"])
            config = SampleConfig.from_dict({**data["config"], "stop": tuple(data["config"]["stop"])})
            framing = Framing(**data["framing"])
            if not isinstance(text, str) or not isinstance(turns, int) or turns < 0:
                raise TypeError("text or turns")
            if not all(isinstance(v, str) for v in framing.__dict__.values()):
                raise TypeError("framing")
        except (KeyError, TypeError, ValueError, ChargenError) as e:
            raise ChargenError(f"{path} is damaged ({e}): the conversation was not loaded") from None
        self.reset()
        self.text, self.turns, self.primed, self.config, self.framing = text, turns, primed, config, framing
        return path

    def _primed(self, state, logits) -> Primed | None:
        """A saved state and next-token logits, checked against this model's shapes."""
        if state is None and logits is None:
            return None
        model, device = self.generator.model, self.generator.device
        want = model.initial_state(1, "meta")
        if (
            not isinstance(state, list)
            or len(state) != len(want)
            or not all(isinstance(s, torch.Tensor) and s.shape == w.shape for s, w in zip(state, want))
            or not isinstance(logits, torch.Tensor)
            or tuple(logits.shape) != (1, self.generator.tokenizer.vocab_size)
        ):
            raise ValueError("its hidden state does not fit this model")
        dtype = model.head.weight.dtype
        return Primed(tuple(s.to(device, dtype) for s in state), logits.to(device, dtype))

    def _model_id(self) -> str:
        """Tells models apart: a hash of the weights' first and last tensors and the tokenizer."""
        params = list(self.generator.model.state_dict().values())
        return checkpoint.checksum([params[0][:4], params[-1], self.generator.tokenizer.fingerprint()])
