"""`chargen chat`: an interactive session whose hidden state carries across every turn."""

from __future__ import annotations

import sys

import click

from chargen.cli import cli
from chargen.cli.console import ANSI, stdout, write
from chargen.cli.options import (
    checkpoint_option,
    device_option,
    learn_config,
    learn_options,
    resolve_checkpoint,
    sample_config,
    sampling_options,
)


@cli.command()
@checkpoint_option
@sampling_options
@click.option("--user-prefix", default="", help='Put before each of your turns, e.g. "ROMEO:\\n".')
@click.option("--bot-prefix", default="", help='Put before each answer, e.g. "\\nJULIET:\\n".')
@click.option(
    "--learn", is_flag=True, help="Let the model learn from the conversation as it goes (saved with the session)."
)
@learn_options
@device_option
def chat(checkpoint, user_prefix, bot_prefix, learn, device, **sampling) -> None:
    """Talk with a model: each line you type becomes context, then the model writes.

    The model's memory is its hidden state, carried across the whole conversation at a
    constant cost per character. Answers stop at a blank line (set with --stop), at
    --length characters, or at Ctrl-C. /help lists the commands; Ctrl-D or /bye leaves.
    A line-mode model (trained with --lines) reads your line as one example of its list
    and answers with one line.

    \b
      chargen chat
      chargen chat --user-prefix "ROMEO:\\n" --bot-prefix "\\nJULIET:\\n" -t 0.7
      printf 'ROMEO:\\n' | chargen chat > out.txt     # out.txt: the conversation as it stands at the end
    """
    from dataclasses import replace

    from chargen.chat.conversation import Conversation, framing_for
    from chargen.chat.repl import Repl
    from chargen.config import unescape
    from chargen.generate import Generator

    sampling_stop = bool(sampling["stop"])
    config = sample_config(sampling)
    learning = learn_config(sampling, learn, "--learn")
    generator = Generator.load(resolve_checkpoint(checkpoint), device)
    learner = None
    if learn:
        from chargen.dynamic import Learner

        learner = Learner(generator.model, learning)  # this session's copy of the weights; the file stays
    framing, stop = framing_for(generator, unescape(user_prefix), unescape(bot_prefix))
    config = config if sampling_stop else replace(config, stop=stop)
    conversation = Conversation(generator, config, framing, learner=learner)

    def describe() -> str:  # a conversation loaded from a file saved while learning learns on
        learner = conversation.learner
        how = f"\nlearning from the conversation: {learner.config.describe()}" if learner else ""
        return generator.describe() + how

    if sys.stdin.isatty() and sys.stdout.isatty():
        out, read = TerminalOutput(), _terminal_reader()
        out.note(f"chatting with {describe()}\ntype a line and press Enter; /help for commands, Ctrl-D to leave")
        sys.exit(Repl(conversation, read, out, describe).run())
    code = Repl(conversation, _plain_read, PlainOutput(), describe).run()
    write(conversation.text + ("" if conversation.text.endswith("\n") or not conversation.text else "\n"))
    sys.exit(code)


def _plain_read(prompt: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.removesuffix("\n")


def _terminal_reader():
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    from chargen.chat.conversation import chats_dir

    try:
        chats_dir().parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(chats_dir().parent / "chat_history"))
    except OSError:
        history = InMemoryHistory()
    session = PromptSession(history=history, completer=_completer())
    # prompt_toolkit keeps bytes that are not UTF-8 as lone surrogates; they become U+FFFD, as in a pipe
    return lambda prompt: session.prompt(prompt).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _completer():
    """Tab completes a slash command, and a setting's name after /set."""
    from prompt_toolkit.completion import Completer, Completion

    from chargen.chat.repl import COMMANDS, SETTINGS

    class Slash(Completer):
        def get_completions(self, document, complete_event):
            words = document.text_before_cursor.split(" ")
            choices = COMMANDS if len(words) == 1 else SETTINGS if words[0] == "/set" and len(words) == 2 else ()
            for choice in choices:
                if choice.startswith(words[-1]) and words[-1].startswith("/") == (len(words) == 1):
                    yield Completion(choice, start_position=-len(words[-1]))

    return Slash()


class PlainOutput:
    """In a pipe: every turn as the model read it and every answer drawn, streamed to stderr as they are written;
    the conversation as it stands (no retried, undone or unpicked answer) goes to stdout at the end."""

    def __init__(self) -> None:
        self.last = "\n"

    def fed(self, text: str, bot_prefix: str) -> None:
        self._write(text)

    def bot(self, text: str) -> None:
        self._write(text)

    def end_answer(self) -> None:
        if not self.last.endswith("\n"):
            self._write("\n")

    def candidates(self, answers: list[tuple[int, str]]) -> None:
        for k, (seed, text) in enumerate(answers, 1):
            self._write(f"--- answer {k} of {len(answers)} (seed {seed}) ---\n{text}\n")

    def note(self, text: str) -> None:
        sys.stderr.write(text + "\n")

    def clear(self) -> None:
        pass

    def _write(self, text: str) -> None:
        if text:
            sys.stderr.write(text)
            sys.stderr.flush()
            self.last = text


class TerminalOutput(PlainOutput):
    """Colour on a terminal: the model's text in cyan, its prefix in bold, notes dimmed."""

    def fed(self, text: str, bot_prefix: str) -> None:
        sys.stdout.write(f"{ANSI['prefix']}{bot_prefix}{ANSI['reset']}{ANSI['answer']}")
        self.last = bot_prefix or "\n"

    def end_answer(self) -> None:
        sys.stdout.write(ANSI["reset"])
        super().end_answer()

    def candidates(self, answers: list[tuple[int, str]]) -> None:
        """Side by side, numbered, as many columns as the terminal has room for."""
        from rich.table import Table

        console = stdout()
        per_row = max(1, min(len(answers), console.width // 28))
        for start in range(0, len(answers), per_row):
            table = Table(show_lines=False, expand=True)
            row = answers[start : start + per_row]
            for k, (seed, _) in enumerate(row, start + 1):
                table.add_column(f"[{k}] seed {seed}", style="cyan", overflow="fold", ratio=1)
            table.add_row(*(text for _, text in row))
            console.print(table)

    def note(self, text: str) -> None:
        sys.stderr.write(f"{ANSI['dim']}{text}{ANSI['reset']}\n")

    def clear(self) -> None:
        sys.stdout.write(ANSI["clear"])
        sys.stdout.flush()

    def _write(self, text: str) -> None:  # on a terminal the conversation streams where it is read
        if text:
            write(text)
            self.last = text
