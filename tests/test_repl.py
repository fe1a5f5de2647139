"""The chat loop without a terminal (a fake conversation), then `chargen chat` for real: a pipe and a pty."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

import pytest

from chargen.chat.conversation import Framing
from chargen.chat.repl import Output, Repl
from chargen.config import SampleConfig
from chargen.errors import ChargenError

from .test_cli import default_sigint


@dataclass
class Echo:
    """A conversation with no model: it answers with the reverse of what it was fed."""

    config: SampleConfig = field(default_factory=SampleConfig)
    framing: Framing = field(default_factory=Framing)
    text: str = ""
    interrupt_after: int | None = None
    saved: dict = field(default_factory=dict)
    at: int = 0
    learner: None = None

    def feed(self, line):
        self.text += line + "\n"
        self.last = line
        return [c for c in line if c == "☃"]

    def answer(self):
        for i, c in enumerate(reversed(self.last)):
            if self.interrupt_after is not None and i == self.interrupt_after:
                raise KeyboardInterrupt
            self.text += c
            yield c

    def reset(self):
        self.text = ""

    def undo(self):
        return False

    def set(self, key, value):
        self.config = replace(self.config, **{key: value})

    def save(self, name, overwrite=False):
        if name in self.saved and not overwrite:
            raise ChargenError(f"a conversation called {name!r} exists already")
        self.saved[name] = self.text
        return name

    def load(self, name):
        if name not in self.saved:
            raise ChargenError(f"no saved conversation {name!r}")
        self.text = self.saved[name]
        return name


class Recorder(Output):
    def __init__(self):
        self.bots, self.notes, self.current, self.fed_texts = [], [], "", []

    def fed(self, text, bot_prefix):
        self.fed_texts.append(text)

    def candidates(self, answers):
        self.notes.append(f"{len(answers)} candidates")

    def bot(self, text):
        self.current += text

    def end_answer(self):
        self.bots.append(self.current)
        self.current = ""

    def note(self, text):
        self.notes.append(text)


def drive(lines, conversation=None):
    conversation = conversation or Echo()
    queue = list(lines)

    def read(prompt):
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    out = Recorder()
    code = Repl(conversation, read, out, describe=lambda: "echo model").run()
    return code, out, conversation


def test_turns_stream_answers_and_ctrl_d_leaves_cleanly():
    code, out, _ = drive(["abc", "hello"])
    assert code == 0 and out.bots == ["cba", "olleh"]


def test_settings_commands_and_their_errors():
    code, out, conv = drive(
        [
            "/set temp 0.5",
            "/set top_k 20",
            "/set top_p 0.9",
            "/set length 30",
            '/set stop "\\n\\n" END',
            "/set seed 1",
            "/set temp -1",
            "/set temp hot",
            "/set colour red",
            "/frobnicate",
            "/show",
            "/set top_k none",
        ]
    )
    assert conv.config.temp == 0.5 and conv.config.top_p == 0.9 and conv.config.length == 30
    assert conv.config.stop == ("\n\n", "END") and conv.config.seed == 1 and conv.config.top_k is None
    text = "\n".join(out.notes)
    assert "temp must be 0 or more" in text and "not 'hot'" in text and "KEY one of" in text
    assert "unknown command /frobnicate" in text and "echo model" in text


def test_help_lists_every_command_in_one_line_each():
    _, out, _ = drive(["/help"])
    for command in ("/set", "/show", "/reset", "/save", "/load", "/undo", "/clear", "/bye"):
        assert sum(line.startswith(command) for line in out.notes[0].splitlines()) == 1


def test_ctrl_c_stops_an_answer_and_the_session_goes_on():
    conv = Echo(interrupt_after=2)
    code, out, _ = drive(["abcdef", KeyboardInterrupt(), "/show"], conv)
    assert code == 0 and out.bots == ["fe"] and "echo model" in out.notes[-1]
    assert out.notes[0].startswith("(stopped: what was written is kept as the turn")


def test_triple_quotes_make_one_multi_line_turn_and_bye_leaves():
    code, out, conv = drive(['"""first', "second", 'third"""', "/bye", "never read"])
    assert conv.text.startswith("first\nsecond\nthird\n") and code == 0 and len(out.bots) == 1


def test_unknown_characters_are_reported_and_save_load_errors_are_one_line():
    _, out, conv = drive(["a☃b", "/load nothing", "/save", "/save x", "bc", "/save x", "/save! x", "/reset", "/load x"])
    assert any("'☃'" in n for n in out.notes)
    assert any("no saved conversation 'nothing'" in n for n in out.notes)
    assert any(n.startswith("usage: /save NAME") for n in out.notes)
    assert out.notes.count("saved to x") == 2 and any("exists already" in n for n in out.notes)
    assert "loaded x" in out.notes and conv.text == "a☃b\nb☃abc\ncb"  # the /save! copy, after both turns


# -- the real thing ------------------------------------------------------------------------------


def chat(ckpt, *args, stdin="", env=None):
    return subprocess.run(
        [sys.executable, "-m", "chargen", "chat", "-c", str(ckpt), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_piped_transcript(tiny_ckpt):
    result = chat(tiny_ckpt, "--seed", "1", "-l", "40", "--user-prefix", "ROMEO:\\n", stdin="the king\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:\nthe king\n") and len(result.stdout) > len("ROMEO:\nthe king\n")
    assert "\x1b[" not in result.stdout  # no colour in a pipe


def test_a_piped_chat_writes_the_conversation_as_it_stands(tiny_ckpt):
    """Retried, undone and unpicked answers stream to stderr; stdout is the conversation as it ends."""
    lines = "the king\n/retry\n/best 3\n/pick 2\nlong live\n/undo\n"
    result = chat(tiny_ckpt, "--seed", "1", "-l", "30", "--user-prefix", "ROMEO:\\n", stdin=lines)
    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert out.startswith("ROMEO:\nthe king\n") and out.count("ROMEO:") == 1  # the undone turn is gone
    assert "long live" not in out and "long live" in err
    candidates = err.split("--- answer 1 of 3")[1]
    picked = candidates.split("--- answer 2 of 3")[1].split("---\n", 1)[1].split("\n--- answer 3 of 3")[0]
    others = [candidates.split("---\n", 1)[1].split("\n--- answer 2 of 3")[0], candidates.split("answer 3 of 3")[1]]
    kept = out.removeprefix("ROMEO:\nthe king\n")
    others = [o.split("---\n", 1)[-1].strip() for o in others]
    assert kept.startswith(picked.rstrip("\n"))
    assert all(o not in kept for o in others if len(o) > 5 and o != picked.strip())  # the unpicked ones are not


def test_save_then_load_in_a_new_process_continues_exactly(tiny_ckpt, tmp_path):
    env = {"CHARGEN_HOME": str(tmp_path)}
    turns = "/set seed 5\nthe king is\n/save talk\nthe queen\n"
    whole = chat(tiny_ckpt, "-l", "60", stdin=turns, env=env)
    resumed = chat(tiny_ckpt, "-l", "60", stdin="/load talk\nthe queen\n", env=env)
    assert whole.returncode == resumed.returncode == 0, whole.stderr + resumed.stderr
    saved = tmp_path / "chats" / "talk.pt"
    assert saved.exists()
    (tmp_path / "chats" / "model.pt").write_bytes(tiny_ckpt.read_bytes())
    wrong = chat(tiny_ckpt, stdin="/load model\n", env=env)  # a model is not a conversation
    assert "is a model checkpoint, not a saved conversation" in wrong.stderr
    info = subprocess.run([sys.executable, "-m", "chargen", "info", str(saved)], capture_output=True, text=True)
    assert info.returncode == 1 and "is a saved conversation, not a model checkpoint" in info.stderr
    last = lambda out: out.split("the queen\n", 1)[1]
    assert last(whole.stdout) == last(resumed.stdout) and len(last(whole.stdout)) > 0


def test_undo_returns_to_the_state_before_the_last_turn(tiny_ckpt):
    import chargen
    from chargen.chat.conversation import Conversation

    conv = Conversation(chargen.load(str(tiny_ckpt)), SampleConfig(length=50, seed=3))
    conv.feed("the king")
    first = "".join(conv.answer())
    conv.feed("and then something else entirely")
    "".join(conv.answer())
    assert conv.undo() and conv.undo()
    conv.set("seed", 3)  # the same seed again: from the restored state, the same answer
    conv.feed("the king")
    assert "".join(conv.answer()) == first


def test_a_real_terminal_session(tiny_ckpt, tmp_path):
    pexpect = pytest.importorskip("pexpect", reason="the terminal tests need pexpect: pip install -e '.[test]'")
    env = {**os.environ, "CHARGEN_HOME": str(tmp_path), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "chargen", "chat", "-c", str(tiny_ckpt), "-l", "100000000", "--stop", "@@@"],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 120),
        preexec_fn=default_sigint,
    )
    child.expect("Ctrl-D to leave")
    child.expect(">")  # prompt_toolkit draws the prompt with cursor moves, not a literal "> "
    child.sendline("/set temp 0.9")
    child.expect("temp = 0.9")
    child.sendline("the king")
    child.expect("\x1b\\[36m")  # the answer starts, in colour
    time.sleep(1.0)  # a long generation is under way
    child.sendintr()
    child.expect(r"\(stopped: what was written is kept")
    child.expect(">")  # prompt_toolkit draws the prompt with cursor moves, not a literal "> "
    child.sendline("/show")
    child.expect("temp 0.9")
    child.expect(">")
    child.send("/tre")
    time.sleep(0.3)
    child.send("\t")  # Tab completes the command
    time.sleep(0.3)
    child.send("\r")
    child.expect("0 start")
    child.expect(">")
    child.sendline("/set length 12")
    child.expect("length = 12")
    child.sendline("/best 2")
    child.expect(r"\[1\] seed \d+")  # side by side: both headers on one line
    child.expect(r"\[2\] seed \d+")
    child.expect("/pick K keeps answer K")
    child.expect(">")
    time.sleep(0.3)  # let prompt_toolkit take the terminal before Ctrl-D arrives
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_conversation_from_python_stops_at_a_blank_line_as_the_chat_does(tiny_ckpt):
    import chargen
    from chargen.chat.conversation import Conversation
    from chargen.config import CHAT_STOP

    assert Conversation(chargen.load(tiny_ckpt, "cpu")).config.stop == CHAT_STOP == ("\n\n",)


def test_a_branching_session_in_a_pipe(tiny_ckpt, tmp_path):
    lines = "the king\n/retry\n/best 2\n/pick 2\n/goto 1\n/continue\n/tree\n"
    result = chat(tiny_ckpt, "--seed", "2", "-l", "30", stdin=lines, env={"CHARGEN_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("the king\n") == 3  # the turn, its retry, the picked answer: each as fed
    assert "--- answer 1 of 2 (seed " in result.stderr and "--- answer 2 of 2 (seed " in result.stderr
    assert result.stdout.count("the king\n") == 1  # stdout: the conversation where it ends, on turn 1's branch
    assert "at turn 1" in result.stderr and "─*1 " in result.stderr and "<- here" in result.stderr


def test_a_command_that_fails_inside_keeps_the_conversation():
    code, out, conv = drive(["abc", "/tree", "/show", "def"])  # the echo conversation has no tree
    assert code == 0 and out.bots == ["cba", "fed"] and "echo model" in out.notes[1]
    assert out.notes[0].startswith("internal error in /tree: AttributeError") and "/save NAME" in out.notes[0]


def test_an_empty_stop_string_is_no_stop_and_set_says_what_show_shows():
    _, out, conv = drive(['/set stop ""', "/show", '/set stop "" END'])
    assert out.notes[0] == "stop = () (no stop string)" and "stop ()" in out.notes[1]
    assert out.notes[2] == "stop = ('END',)" and conv.config.stop == ("END",)
