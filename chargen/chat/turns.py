"""The tree of a conversation's turns: every turn keeps the hidden state it left behind.

Turn 0 is the start. Each later turn is a line the person typed, framed as it was fed to the
model, and the model's answer; its parent is the turn it followed. Going back to a turn and
typing a new line (or drawing its answer again) adds a sibling, so every branch stays whole and
reachable. A turn's memory is one hidden state (a few kilobytes); the tree keeps at most
`MAX_TURNS` of them: past that, the oldest turns off the current branch are dropped, and on a
single branch longer than that the oldest turns keep their text but free their state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chargen.generate import Primed

MAX_TURNS = 1000


@dataclass
class Turn:
    id: int
    parent: int | None  # None for the start
    line: str = ""  # what the person typed
    fed: str = ""  # the text fed to the model for it: the line, framed and on a line of its own
    answer: str = ""  # what the model wrote
    after: Primed | None = None  # the state after the answer; None for a fresh model, or once freed
    children: list[int] = field(default_factory=list)
    freed: bool = False  # its state was let go to keep the tree within MAX_TURNS


class TurnTree:
    def __init__(self) -> None:
        self.turns: dict[int, Turn] = {0: Turn(0, None)}
        self._next = 1

    def __getitem__(self, turn_id: int) -> Turn:
        return self.turns[turn_id]

    def __contains__(self, turn_id: int) -> bool:
        return turn_id in self.turns

    def add(self, parent: int, turn_id: int | None = None, **fields) -> Turn:
        """A new turn after `parent`, numbered next (or `turn_id`, for a tree being read back)."""
        turn = Turn(self._next if turn_id is None else turn_id, parent, **fields)
        self._next = max(self._next, turn.id + 1)
        self.turns[turn.id] = turn
        self.turns[parent].children.append(turn.id)
        return turn

    def path(self, turn_id: int) -> list[Turn]:
        """The turns from the start to `turn_id`, in order."""
        out = []
        while turn_id is not None:
            out.append(self.turns[turn_id])
            turn_id = self.turns[turn_id].parent
        return out[::-1]

    def text(self, turn_id: int) -> str:
        """Everything the model read and wrote on the way to `turn_id`."""
        return "".join(t.fed + t.answer for t in self.path(turn_id))

    def leaves(self) -> list[Turn]:
        return [t for t in self.turns.values() if not t.children and t.id != 0]

    def prune(self, keep: int) -> list[int]:
        """Keep the tree within MAX_TURNS states: drop the oldest leaves off the branch to `keep`, then free
        the oldest states on it. Returns the turns dropped or freed."""
        on_path = {t.id for t in self.path(keep)}
        gone = []
        while sum(not t.freed for t in self.turns.values()) > MAX_TURNS:
            off = [t for t in self.leaves() if t.id not in on_path]
            if off:
                victim = min(off, key=lambda t: t.id)
                self.turns[victim.parent].children.remove(victim.id)
                del self.turns[victim.id]
            else:
                victim = next(t for t in self.path(keep) if not t.freed and t.id not in (0, keep))
                victim.after, victim.freed = None, True
            gone.append(victim.id)
        return gone

    def draw(self, here: int, width: int = 32) -> str:
        """The tree, one turn a line: its number, the start of its line and of its answer; `*` marks the
        branch you are on and `<- here` the turn you are at. Only a branch indents: a turn that is the only
        one after its parent stands under it, so a long conversation stays narrow (and is walked without
        recursion, however deep)."""
        on_path = {t.id for t in self.path(here)}
        lines = ["0 start" + ("  <- here" if here == 0 else "")]
        todo = self._branches(0, "")[::-1]  # (turn, the lead of its line, the indent of the turns after it)
        while todo:
            turn_id, lead, under = todo.pop()
            t = self.turns[turn_id]
            mark = "*" if turn_id in on_path else " "
            said = f"{_clip(t.line, width)!r} -> {_clip(t.answer, width)!r}"
            note = "  <- here" if turn_id == here else "  (state freed)" if t.freed else ""
            lines.append(f"{lead}{mark}{t.id} {said}{note}")
            todo.extend(self._branches(turn_id, under)[::-1])
        return "\n".join(lines)

    def _branches(self, turn_id: int, indent: str) -> list[tuple[int, str, str]]:
        """The turns after `turn_id`, drawn at `indent`."""
        children = self.turns[turn_id].children
        if len(children) == 1:
            return [(children[0], indent[:-1], indent)]  # its mark under its parent's
        return [
            (child, indent + ("└─" if last else "├─"), indent + ("   " if last else "│  "))
            for child, last in ((c, i == len(children) - 1) for i, c in enumerate(children))
        ]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
