"""The interactive chat loop: lines and slash commands in, the model's answers streamed out.

The loop knows no model and no terminal. It is given a conversation (see
`chargen.chat.conversation.Conversation`: it calls feed, answer, retry, more, best, pick, undo, redo,
goto, reset, set, save and load, and reads at, turn, tree, text, config, framing and learner), a
`read(prompt)` function and an `Output`; `chargen chat` passes prompt_toolkit and colour on a
terminal, plain streams in a pipe, and tests pass lists.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Callable, Iterator

from chargen.config import SampleConfig, parse_setting, setting_types
from chargen.errors import ChargenError

SETTINGS = tuple(setting_types(SampleConfig))  # what /set changes and /show lists: every sampling setting
HELP = {
    "/retry": "/retry           the last answer again, drawn afresh (the old one stays, as a branch)",
    "/continue": "/continue        more of the last answer, from where it stopped",
    "/best": "/best N          N answers to the last line at once, numbered; /pick K keeps answer K",
    "/pick": "/pick K          keep answer K of the last /best",
    "/undo": "/undo            back one turn (any number of times); /redo goes forward again",
    "/redo": "/redo            forward again after /undo",
    "/tree": "/tree            every turn and branch; * marks the branch you are on",
    "/goto": "/goto N          to turn N of /tree: the next line starts a new branch from there",
    "/branches": "/branches        the last turn of every branch",
    "/set": f"/set KEY VALUE   change a setting: {', '.join(SETTINGS)} (none turns an optional one off)",
    "/show": "/show            the current settings and the model",
    "/reset": "/reset           forget the conversation: a fresh hidden state and an empty tree",
    "/save": "/save NAME       save the whole conversation (every branch, state and setting); /save! replaces",
    "/load": "/load NAME       continue a saved conversation exactly where it was",
    "/clear": "/clear           clear the screen",
    "/help": "/help            this list",
    "/bye": "/bye             leave (so does Ctrl-D)",
}
COMMANDS = (*HELP, "/save!")


class Output:
    """Where the loop writes: the person's framed turn, the model's text, and notes."""

    def fed(self, text: str, bot_prefix: str) -> None:
        """The text a turn fed to the model (a transcript shows it; a terminal shows the prefix)."""

    def bot(self, text: str) -> None: ...

    def end_answer(self) -> None: ...

    def candidates(self, answers: list[tuple[int, str]]) -> None:
        """Answers drawn side by side by /best: (seed, text) each, numbered from 1."""
        self.note("\n".join(f"[{k}] (seed {seed}) {text!r}" for k, (seed, text) in enumerate(answers, 1)))

    def note(self, text: str) -> None: ...

    def clear(self) -> None: ...


class Repl:
    def __init__(self, conversation, read: Callable[[str], str], out: Output, describe: Callable[[], str] = str):
        self.conversation, self.read, self.out, self.describe = conversation, read, out, describe

    def run(self) -> int:
        """Until Ctrl-D or /bye; Ctrl-C stops an answer (or clears the line) and the session goes on."""
        while True:
            try:
                text = self._read_turn()
            except EOFError:
                return 0
            except KeyboardInterrupt:
                continue
            if text.startswith("/"):
                if self.command(text) == "bye":
                    return 0
                continue
            self.turn(text)

    def _read_turn(self) -> str:
        """One line, or everything between a pair of triple quotes."""
        line = self.read("> ")
        if not line.lstrip().startswith('"""'):
            return line
        body = line.lstrip()[3:]
        while not body.rstrip().endswith('"""'):
            body += "\n" + self.read("... ")
        return body.rstrip()[:-3].removeprefix("\n")

    def turn(self, text: str) -> None:
        c = self.conversation
        before = len(c.text)
        try:
            unknown = c.feed(text)
        except ChargenError as e:
            self.out.note(f"error: {e}")
            return
        if unknown:
            self.out.note(f"characters the model never saw were left out: {' '.join(map(repr, unknown))}")
        self.out.fed(c.text[before:], c.framing.bot_prefix)
        self._write(c.answer())

    def _write(self, pieces: Iterator[str]) -> None:
        """Stream an answer; Ctrl-C keeps what was written as the turn, and says so."""
        try:
            for piece in pieces:
                self.out.bot(piece)
        except KeyboardInterrupt:
            self.out.end_answer()
            self.out.note("(stopped: what was written is kept as the turn; /retry draws it again, /continue goes on)")
            return
        self.out.end_answer()

    def command(self, line: str) -> str | None:
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.out.note(f"cannot read that command ({e}); /help lists them")
            return None
        name, args = words[0], words[1:]
        if name == "/bye":
            return "bye"
        handler = getattr(self, "_" + name[1:].replace("!", "_replace"), None) if name in COMMANDS else None
        if handler is None:
            self.out.note(f"unknown command {name}; /help lists them")
            return None
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:  # the wrong number of words for this command
            self.out.note(f"usage: {HELP[name.rstrip('!')].split('  ')[0]}")
            return None
        try:
            handler(*args)
        except ChargenError as e:
            self.out.note(f"error: {e}")
        except OSError as e:
            self.out.note(f"error: {e.strerror or e}: {e.filename or ''}")
        except Exception as e:  # a fault of chargen's: the conversation is still whole, so the session goes on
            self.out.note(
                f"internal error in {name}: {type(e).__name__}: {e}; the conversation is kept (/save NAME keeps it "
                "on disk): please report it"
            )
        return None

    # -- the commands: one method each, taking the command's words --------------------------------

    def _help(self) -> None:
        self.out.note("\n".join(HELP.values()))

    def _show(self) -> None:
        c = self.conversation
        settings = c.config.to_dict()
        self.out.note(
            "  ".join(f"{key} {settings[key]!r}" for key in SETTINGS) + "\n"
            f"user prefix {c.framing.user_prefix!r}  bot prefix {c.framing.bot_prefix!r}  "
            f"context {len(c.text):,} characters, turn {c.at}\n{self.describe()}"
        )

    def _set(self, key: str, *values: str) -> None:
        if key not in SETTINGS or not values:
            self.out.note(f"usage: /set KEY VALUE, with KEY one of {', '.join(SETTINGS)}")
            return
        self.conversation.set(key, parse_setting(SampleConfig, key, list(values)))
        value = getattr(self.conversation.config, key)  # what is in effect: an empty stop string is none
        self.out.note(f"{key} = {value!r}" + (" (no stop string)" if key == "stop" and not value else ""))

    def _reset(self) -> None:
        self.conversation.reset()
        self.out.note("fresh hidden state: the model remembers nothing")

    def _retry(self) -> None:
        c = self.conversation
        pieces = c.retry()
        self.out.note(f"turn {c.at}: the last answer drawn again (turn {c.tree[c.turn.parent].children[-2]} stays)")
        self.out.fed(c.turn.fed, c.framing.bot_prefix)
        self._write(pieces)

    def _continue(self) -> None:
        self._write(self.conversation.more())

    def _best(self, n: str) -> None:
        try:
            answers = self.conversation.best(_number(n, "/best N"))
        except KeyboardInterrupt:
            self.out.note("(stopped: no answers kept)")
            return
        self.out.candidates(answers)
        self.out.note(f"/pick K keeps answer K (1 to {len(answers)})")

    def _pick(self, k: str) -> None:
        turn = self.conversation.pick(_number(k, "/pick K"))
        self.out.note(f"turn {turn.id}: answer {k} kept")
        self.out.fed(turn.fed, self.conversation.framing.bot_prefix)
        self.out.bot(turn.answer)
        self.out.end_answer()

    def _undo(self) -> None:
        self.out.note(f"back to turn {self.conversation.at}" if self.conversation.undo() else "nothing to undo")

    def _redo(self) -> None:
        self.out.note(f"forward to turn {self.conversation.at}" if self.conversation.redo() else "nothing to redo")

    def _tree(self) -> None:
        self.out.note(self.conversation.tree.draw(self.conversation.at))

    def _goto(self, n: str) -> None:
        turn = self.conversation.goto(_number(n, "/goto N"))
        self.out.note(f"at turn {turn.id}: the next line starts a new branch from here")

    def _branches(self) -> None:
        c = self.conversation
        leaves = c.tree.leaves()
        if not leaves:
            self.out.note("no turns yet")
            return
        lines = [
            f"turn {t.id}: {len(c.tree.path(t.id)) - 1} turns deep, ends {t.answer[-40:]!r}"
            + ("  <- here" if t.id == c.at else "")
            for t in leaves
        ]
        self.out.note("\n".join(lines))

    def _save(self, name: str) -> None:
        self.out.note(f"saved to {self.conversation.save(name)}")

    def _save_replace(self, name: str) -> None:
        self.out.note(f"saved to {self.conversation.save(name, overwrite=True)}")

    def _load(self, name: str) -> None:
        learning = self.conversation.learner is not None
        self.out.note(f"loaded {self.conversation.load(name)}")
        if not learning and self.conversation.learner is not None:
            self.out.note(
                f"it was saved with --learn: the model goes on learning from the conversation "
                f"({self.conversation.learner.config.describe()})"
            )

    def _clear(self) -> None:
        self.out.clear()


def _number(word: str, usage: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise ChargenError(f"{usage} takes a whole number, not {word!r}") from None
