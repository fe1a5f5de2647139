"""A conversation with a model: a tree of turns whose hidden states carry the whole conversation.

Each turn feeds the person's line through the model (it becomes context), then the model
writes until a stop string, a length limit or an interruption. Nothing is ever re-read: the
recurrent state *is* the memory of the conversation, at constant cost per character. And
since every turn keeps its state (see `chargen.chat.turns`), any turn can be gone back to,
answered again (`retry`), continued (`more`), branched from (`goto`, then a new line) or
answered N ways at once (`best`, then `pick`), exactly.

Randomness only moves forward: the conversation draws from one generator, seeded by the `seed`
setting (fresh when it is none), and going back (`undo`, `goto`) never replays the numbers an
earlier answer used, so no two branches share a random stream. The same seed and the same
commands replay a whole session exactly; `/save` keeps the generator's state with the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chargen import checkpoint
from chargen.chat.turns import Turn, TurnTree
from chargen.config import CHAT_STOP, MAX_SEED, LearnConfig, SampleConfig, as_text
from chargen.errors import ChargenError, SettingError
from chargen.generate import Generator, Primed

if TYPE_CHECKING:
    from chargen.dynamic import Learner


@dataclass
class Framing:
    """How a turn is framed for a dialogue corpus: e.g. user 'ROMEO:\\n', bot 'JULIET:\\n'."""

    user_prefix: str = ""
    bot_prefix: str = ""
    start: str = ""  # read before the first turn: a line-mode model's line boundary


def framing_for(generator: Generator, user_prefix: str = "", bot_prefix: str = "") -> tuple[Framing, tuple[str, ...]]:
    """How a chat with `generator`'s model is framed and where an answer stops, unless told otherwise: a line-mode
    model (a list) reads the first turn after a line boundary and answers one line; a model of plays or prose
    answers until a blank line (a play's prefixes name its speakers, e.g. "ROMEO:\\n" and "JULIET:\\n")."""
    if generator.line_state is not None:
        return Framing(user_prefix, bot_prefix, "\n"), ("\n",)
    return Framing(user_prefix, bot_prefix), CHAT_STOP


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
    learner: Learner | None = None  # with one, the model learns from each turn (its weights, not the file's)

    def __post_init__(self) -> None:
        if not isinstance(self.config, SampleConfig):
            raise SettingError(f"config must be a SampleConfig, not {self.config!r}", "config")
        as_text("user_prefix", self.framing.user_prefix)
        as_text("bot_prefix", self.framing.bot_prefix)
        as_text("start", self.framing.start)
        self.reset()
        self._identity = self._model_id()  # of the trained weights: a learner changes them as it goes

    def reset(self) -> None:
        """A fresh hidden state and an empty tree."""
        self.tree = TurnTree()
        self.at = 0  # the turn the conversation stands at
        self.rng = self.generator.rng(self.config.seed)
        self.candidates: list[tuple[int, str, Primed, torch.Tensor]] = []  # from best(): seed, text, state, rng
        self._redo: list[int] = []
        self.learnt: list[int] = []  # the turns the learner's weights have learnt from, in order
        if self.learner is not None:
            self.learner.reset()

    @property
    def text(self) -> str:
        """Everything the model has read or written on the way to this turn, in order."""
        return self.tree.text(self.at)

    @property
    def turn(self) -> Turn:
        return self.tree[self.at]

    # -- a turn --------------------------------------------------------------------------------

    def feed(self, line: str) -> list[str]:
        """Read the person's line into the state, as a new turn; returns the characters the model never saw."""
        as_text("line", line)
        fed = f"{self.framing.user_prefix}{line.removesuffix(chr(10))}\n{self.framing.bot_prefix}"
        if not self.text:
            fed = self.framing.start + fed
        elif not self.text.endswith("\n"):
            fed = "\n" + fed  # a turn starts on a new line
        self._learn_to(self.at)
        after = self._read(self.turn, fed)
        self._enter(self.tree.add(self.at, line=line, fed=fed, after=after))
        return after.unknown

    def answer(self) -> Iterator[str]:
        """The model's writing at this turn, piece by piece, added to its answer: after `feed`, the reply;
        after a reply, more of it. An interruption keeps what was written, the state where it stopped."""
        turn = self.turn
        if turn.id == 0 or turn.after is None:
            raise ChargenError("nothing to answer yet: type a line first")
        for _, piece in self.generator.stream(turn.after, self.config, [self.rng], keep_stop=True):  # advances
            turn.answer += piece
            yield piece

    def retry(self) -> Iterator[str]:
        """The last answer drawn afresh from the state before it, as a new branch beside the old one."""
        turn = self._answered()
        self._enter(self.tree.add(turn.parent, line=turn.line, fed=turn.fed, after=self._before(turn)))
        return self.answer()

    def more(self) -> Iterator[str]:
        """More of the last answer, from where it stopped (on a branch of its own if turns follow it)."""
        turn = self._answered()
        self._learn_to(turn.parent)
        if turn.children:
            self._enter(
                self.tree.add(turn.parent, line=turn.line, fed=turn.fed, answer=turn.answer, after=turn.after.copy())
            )
        return self.answer()

    def best(self, n: int) -> list[tuple[int, str]]:
        """`n` answers to the last line, drawn in one batch from the state before its answer, each stream
        with a seed of its own: (seed, text) each. `pick(k)` keeps one."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise SettingError(f"n must be from 1 to 64, not {n!r}", "n")
        turn = self._answered()
        before = self._before(turn)
        seeds = torch.randint(MAX_SEED + 1, (n,), generator=self.rng, device=self.rng.device).tolist()
        generators = [self.generator.rng(seed) for seed in seeds]
        batch = before.expand(n)
        texts = [""] * n
        for b, piece in self.generator.stream(batch, self.config, generators, keep_stop=True):
            texts[b] += piece
        self.candidates = [(seeds[b], texts[b], batch.take([b]), generators[b].get_state()) for b in range(n)]
        return [(seed, self._unstopped(text)) for seed, text, _, _ in self.candidates]

    def _unstopped(self, text: str) -> str:
        """`text` without the stop string it ended at (kept in the turn, as the state read it; not shown)."""
        return next((text.removesuffix(s) for s in self.config.stop if text.endswith(s)), text)

    def pick(self, k: int) -> Turn:
        """Keep answer `k` (from 1) of the last `best` as the turn, on a branch beside the others; the random
        draw goes on as that answer's own stream would have."""
        if not self.candidates:
            raise ChargenError("nothing to pick from: /best N draws N answers first")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.candidates):
            raise SettingError(f"k must be from 1 to {len(self.candidates)}, not {k!r}", "k")
        _, text, after, rng = self.candidates[k - 1]
        turn = self._answered()
        self._enter(self.tree.add(turn.parent, line=turn.line, fed=turn.fed, answer=text, after=after))
        self.rng.set_state(rng)
        return self.turn

    # -- moving in the tree --------------------------------------------------------------------

    def undo(self) -> bool:
        """Back to the turn before this one; False at the start."""
        if self.at == 0:
            return False
        self._redo.append(self.at)
        self._move(self.turn.parent)
        return True

    def redo(self) -> bool:
        """Forward again to the turn the last `undo` left; False when there is none."""
        while self._redo:
            turn_id = self._redo.pop()
            if turn_id in self.tree:
                self._move(turn_id)
                return True
        return False

    def goto(self, turn_id: int) -> Turn:
        """To turn `turn_id` (as /tree numbers them): the next line starts a new branch from there."""
        if turn_id not in self.tree:
            raise ChargenError(f"there is no turn {turn_id}: /tree shows the turns")
        if self.tree[turn_id].freed:
            raise ChargenError(f"turn {turn_id}'s state was freed to keep the tree small: go to a later turn")
        self._redo.clear()
        self._move(turn_id)
        return self.turn

    def _move(self, turn_id: int) -> None:
        self.at = turn_id
        self.candidates = []  # they belong to the turn they were drawn at

    def _enter(self, turn: Turn) -> None:
        """Stand at a turn just added."""
        self._move(turn.id)
        self._redo.clear()
        self.tree.prune(keep=self.at)

    def _answered(self) -> Turn:
        if self.at == 0:
            raise ChargenError("no answer yet: type a line first")
        return self.turn

    def _read(self, turn: Turn, text: str) -> Primed:
        """The state after `turn` with `text` read into it."""
        if turn.freed:
            raise ChargenError(f"turn {turn.id}'s state was freed to keep the tree small")
        return self.generator.prime(text, primed=turn.after)

    def _before(self, turn: Turn) -> Primed:
        """The state `turn`'s answer was written from: its parent's, with its line read."""
        self._learn_to(turn.parent)
        return self._read(self.tree[turn.parent], turn.fed)

    def _learn_to(self, turn_id: int) -> None:
        """With a learner: weights that have learnt from exactly the turns on the way to `turn_id`.

        Learning is lazy (a turn is learnt when the conversation moves past it) and exact: a
        weight state is a function of the turns learnt, so going back replays them from the
        trained weights (cost: one backward pass over the branch's text)."""
        if self.learner is None:
            return
        path = [t for t in self.tree.path(turn_id) if t.fed + t.answer]
        if self.learnt != [t.id for t in path[: len(self.learnt)]]:
            self.learner.reset()
            self.learnt = []
        for turn in path[len(self.learnt) :]:
            parent = self.tree[turn.parent] if turn.parent is not None else None
            if parent is not None and parent.freed:
                raise ChargenError(f"turn {parent.id}'s state was freed: the model cannot learn that far back")
            ids = self.generator.tokenizer.encode(turn.fed + turn.answer)
            self.learner.read(ids, parent.after.state if parent and parent.after else None)
            self.learnt.append(turn.id)

    # -- settings ------------------------------------------------------------------------------

    def set(self, key: str, value) -> None:
        """Change one sampling setting; a bad value raises SettingError and changes nothing. A new seed
        restarts the random draw from it (none: from fresh randomness)."""
        self.config = SampleConfig.of(**{**self.config.to_dict(), key: value})
        if key == "seed":
            self.rng = self.generator.rng(value)

    # -- save and load -------------------------------------------------------------------------

    def save(self, name: str, overwrite: bool = False) -> Path:
        """Keep the whole tree, where it stands, the settings and the random state as `name` in the chats
        folder; an existing one is replaced only with `overwrite`."""
        path = chat_path(name)
        if path.exists() and not overwrite:
            raise ChargenError(f"a conversation called {name!r} exists already: /save! {name} replaces it")
        path.parent.mkdir(parents=True, exist_ok=True)
        turns = [
            {
                "id": t.id,
                "parent": t.parent,
                "line": t.line,
                "fed": t.fed,
                "answer": t.answer,
                "state": None if t.after is None else list(t.after.state),
                "logits": None if t.after is None else t.after.logits,
                "recent": None if t.after is None else t.after.recent,
                "freed": t.freed,
            }
            for t in self.tree.turns.values()
        ]
        checkpoint.save(
            {
                "kind": "chat",
                "model": self._identity,
                "turns": turns,
                "at": self.at,
                "redo": list(self._redo),
                "rng": self.rng.get_state(),
                "learnt": list(self.learnt),
                "learner": self.learner.state_dict() if self.learner else None,
                "learning": self.learner.config.to_dict() if self.learner else None,
                "config": {**self.config.to_dict(), "stop": list(self.config.stop)},
                "framing": self.framing.__dict__,
            },
            path,
        )
        return path

    def load(self, name: str) -> Path:
        """Continue the conversation saved as `name`; a file that does not fit this model changes nothing. One
        saved while learning goes on learning, as it was saved (with its learning settings), in any session."""
        path = chat_path(name)
        if not path.exists():
            raise ChargenError(f"no saved conversation {name!r} (looked for {path}); /save NAME makes one")
        data = checkpoint.load(path, kind="chat")
        if data.get("model") != self._identity:
            raise ChargenError(f"{path} was saved with another model: its hidden state means nothing to this one")
        try:
            config = SampleConfig.from_dict({**data["config"], "stop": _stops(data["config"]["stop"])})
            framing = Framing(**data["framing"])
            if not all(isinstance(v, str) for v in framing.__dict__.values()):
                raise TypeError("framing")
            tree, at, redo = self._tree(data)
            rng = _rng(data.get("rng"), self.rng.get_state().numel())
            learnt = data.get("learnt") or []
            if not all(t in tree for t in learnt):
                raise ValueError("it learnt from turns it does not have")
            learning = data.get("learning")  # absent in files saved before the settings were kept: the defaults
            learning = None if learning is None else LearnConfig.from_dict(learning)
        except (KeyError, TypeError, ValueError, AttributeError, ChargenError) as e:
            raise ChargenError(f"{path} is damaged ({e}): the conversation was not loaded") from None
        self.config, self.framing = config, framing
        self.reset()
        restored = self.learner is None and data.get("learner") is not None
        if restored:
            from chargen.dynamic import Learner

            self.learner = Learner(self.generator.model, learning)
        if self.learner is not None and data.get("learner") is not None:
            try:
                self.learner.load_state_dict(data["learner"])
            except (KeyError, TypeError, ValueError) as e:
                self.learner.reset()
                self.learner = None if restored else self.learner
                raise ChargenError(f"{path} is damaged ({e}): the conversation was not loaded") from None
            self.learnt = list(learnt)
        self.tree, self._redo = tree, redo
        self.at = at
        if rng is not None:
            self.rng.set_state(rng)
        return path

    def _tree(self, data: dict) -> tuple[TurnTree, int, list[int]]:
        """The turn tree of a saved conversation, every field checked."""
        tree = TurnTree()
        if not isinstance(data.get("turns"), list):  # saved before conversations were trees: the start holds it all
            tree[0].fed, tree[0].after = _str(data["text"]), self._primed(data["state"], data["logits"], None)
            return tree, 0, []
        for saved in sorted(data["turns"], key=lambda t: t["id"]):
            turn_id, parent = saved["id"], saved["parent"]
            if not isinstance(turn_id, int) or (turn_id == 0) != (parent is None) or (turn_id and turn_id in tree):
                raise ValueError("its turns are not numbered")
            if turn_id and parent not in tree:
                raise ValueError(f"turn {turn_id} follows no earlier turn")
            turn = tree[0] if turn_id == 0 else tree.add(parent, turn_id)
            turn.line, turn.fed, turn.answer = _str(saved["line"]), _str(saved["fed"]), _str(saved["answer"])
            turn.after = self._primed(saved["state"], saved["logits"], saved["recent"])
            turn.freed = saved["freed"]
            if not isinstance(turn.freed, bool):
                raise TypeError(f"turn {turn_id}'s freed is {turn.freed!r}, not true or false")
        at, redo = data["at"], data["redo"]
        if at not in tree or not all(r in tree for r in redo):
            raise ValueError("it stands at a turn it does not have")
        return tree, at, list(redo)

    def _primed(self, state, logits, recent) -> Primed | None:
        """A saved state, next-token logits and recent ids, checked against this model's shapes."""
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
        if recent is not None and (
            not isinstance(recent, torch.Tensor)
            or recent.dtype != torch.long
            or recent.dim() != 2
            or recent.shape[0] != 1
            or bool(((recent < 0) | (recent >= logits.shape[1])).any())
        ):
            raise ValueError("its recent tokens do not fit this model")
        dtype = model.head.weight.dtype
        return Primed(
            tuple(s.to(device, dtype) for s in state),
            logits.to(device, dtype),
            recent=None if recent is None else recent.to(device),
        )

    def _model_id(self) -> str:
        """Tells models apart: a hash of the weights' first and last tensors and the tokenizer."""
        params = list(self.generator.model.state_dict().values())
        return checkpoint.checksum([params[0][:4], params[-1], self.generator.tokenizer.fingerprint()])


def _str(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


def _stops(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise TypeError(f"stop is {value!r}, not a list of strings")
    return tuple(value)


def _rng(value, size: int) -> torch.Tensor | None:
    if value is not None and not (
        isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and tuple(value.shape) == (size,)
    ):
        raise TypeError("its random state is not a generator's")
    return value
