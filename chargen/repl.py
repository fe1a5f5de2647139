"""The interactive chat loop: lines and slash commands in, the model's answers streamed out.

The loop knows no model and no terminal. It is given a conversation (feed, answer, undo,
reset, save, load, set), a `read(prompt)` function and an `Output`; `chargen chat` passes
prompt_toolkit and colour on a terminal, plain streams in a pipe, and tests pass lists.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from chargen.config import SampleConfig, parse_setting, setting_types
from chargen.errors import ChargenError

SETTINGS = tuple(setting_types(SampleConfig))  # what /set changes and /show lists: every sampling setting
HELP = {
    "/set": f"/set KEY VALUE   change a setting: {', '.join(SETTINGS)} (none turns an optional one off)",
    "/show": "/show            the current settings and the model",
    "/reset": "/reset           forget the conversation: a fresh hidden state",
    "/undo": "/undo            back to the hidden state before the last turn",
    "/save": "/save NAME       save the conversation (hidden state and text) to resume later; /save! replaces",
    "/load": "/load NAME       continue a saved conversation",
    "/clear": "/clear           clear the screen",
    "/help": "/help            this list",
    "/bye": "/bye             leave (so does Ctrl-D)",
}


class Output:
    """Where the loop writes: the person's framed turn, the model's text, and notes."""

    def fed(self, text: str, bot_prefix: str) -> None:
        """The text a turn fed to the model (a transcript shows it; a terminal shows the prefix)."""

    def bot(self, text: str) -> None: ...

    def end_answer(self) -> None: ...

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
        conversation = self.conversation
        before = len(conversation.text)
        try:
            unknown = conversation.feed(text)
        except ChargenError as e:
            self.out.note(f"error: {e}")
            return
        if unknown:
            self.out.note(f"characters the model never saw were left out: {' '.join(map(repr, unknown))}")
        self.out.fed(conversation.text[before:], conversation.framing.bot_prefix)
        try:
            for piece in conversation.answer():
                self.out.bot(piece)
        except KeyboardInterrupt:
            self.out.end_answer()
            self.out.note("(stopped)")
            return
        self.out.end_answer()

    def command(self, line: str) -> str | None:
        try:
            words = shlex.split(line)
        except ValueError as e:
            self.out.note(f"cannot read that command ({e}); /help lists them")
            return None
        name, args = words[0], words[1:]
        c = self.conversation
        try:
            if name == "/bye":
                return "bye"
            elif name == "/help":
                self.out.note("\n".join(HELP.values()))
            elif name == "/set":
                self._set(args)
            elif name == "/show":
                settings = c.config.to_dict()
                self.out.note(
                    "  ".join(f"{key} {settings[key]!r}" for key in SETTINGS) + "\n"
                    f"user prefix {c.framing.user_prefix!r}  bot prefix {c.framing.bot_prefix!r}  "
                    f"context {len(c.text):,} characters\n{self.describe()}"
                )
            elif name == "/reset":
                c.reset()
                self.out.note("fresh hidden state: the model remembers nothing")
            elif name == "/undo":
                self.out.note("back to before the last turn" if c.undo() else "nothing to undo")
            elif name in ("/save", "/save!", "/load"):
                if len(args) != 1:
                    self.out.note(f"usage: {HELP[name.rstrip('!')].split('  ')[0]}")
                    return None
                path = c.load(args[0]) if name == "/load" else c.save(args[0], overwrite=name == "/save!")
                self.out.note(f"{'loaded' if name == '/load' else 'saved to'} {path}")
            elif name == "/clear":
                self.out.clear()
            else:
                self.out.note(f"unknown command {name}; /help lists them")
        except ChargenError as e:
            self.out.note(f"error: {e}")
        except OSError as e:
            self.out.note(f"error: {e.strerror or e}: {e.filename or ''}")
        return None

    def _set(self, args: list[str]) -> None:
        if len(args) < 2 or args[0] not in SETTINGS:
            self.out.note(f"usage: /set KEY VALUE, with KEY one of {', '.join(SETTINGS)}")
            return
        key = args[0]
        try:
            value = parse_setting(SampleConfig, key, args[1:])
            self.conversation.set(key, value)
        except ChargenError as e:
            self.out.note(f"error: {e}")
            return
        self.out.note(f"{key} = {value!r}")
