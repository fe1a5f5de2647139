"""POST /v1/chat/completions: OpenAI's chat messages read through the chat framing, over a session's carried state.

The messages become text as `chargen chat` frames its turns (`chargen.chat.conversation`): a
user message is read as user prefix, line, newline, bot prefix; an answer stops at a blank line
(one line for a line-mode model) unless `stop` says otherwise; a system message is read as it is,
before the first turn. The prefixes come from the request (`user_prefix`, `bot_prefix`), else
from `chargen serve --user-prefix/--bot-prefix`. A last message from the assistant is continued.
Without `max_tokens`, an answer is up to 500 characters, as in `chargen chat`.

With `"session": ID` (from POST /v1/sessions), the session keeps every message it has read and
its state after each. A request reads from the state after the longest run of leading messages
it shares with the session, so a conversation costs one turn's work per turn however long it
grows, and a retry (the history without its last answer), an undo or an edit costs only the
messages after the change. A history that shares no leading message with the session (or asks
for other prefixes) starts the session afresh, from its prime: a session made without one
answers it as the same request without a session is answered. The draw goes on from the
session's random generator, seeded by the first request's `seed` and again whenever a request
names another seed; so a session fed `chargen chat`'s turns with its seed writes `chargen
chat`'s answers, and a retry draws a new one. Without a session every message is read from a
fresh state, each answer by its own seed (seed, seed + 1, ... for n of them), an earlier answer
read with the stop string it ended at.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace

import torch
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chargen.chat.conversation import Framing, framing_for
from chargen.config import SampleConfig
from chargen.generate import Primed
from chargen.serve.app import (
    MAX_PROMPT,
    RequestError,
    Server,
    Session,
    event_stream,
    read_body,
    refuse_unsupported,
    sample_settings,
    wants_stream,
    whole,
)
from chargen.serve.engine import Stream

MAX_CHAT_BODY = 16 << 20  # bytes: without a session, a client sends the whole conversation every turn
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass
class Said:
    """A message as a session read it: the text the model read for it and the state after."""

    message: Message
    text: str
    after: Primed


@dataclass
class Chat:
    """A session's conversation: its framing, the messages it has read (each with its state), its draw."""

    framing: Framing
    base: Primed | None  # the session's state before the first message (None: fresh)
    base_text: str
    rng: torch.Generator
    seed: int | None
    path: list[Said] = field(default_factory=list)

    def shared(self, messages: list[Message]) -> int:
        """How many leading messages of `messages` this chat has read."""
        k = 0
        while k < min(len(messages), len(self.path)) and self.path[k].message == messages[k]:
            k += 1
        return k

    def state(self, k: int) -> tuple[Primed | None, str]:
        """The state after the first `k` messages, and everything read up to it."""
        return (self.path[k - 1].after if k else self.base), self.base_text + "".join(s.text for s in self.path[:k])


def messages_of(data: dict) -> list[Message]:
    """The request's `messages`, checked: system, user and assistant messages whose content is text."""
    messages = data.get("messages")
    if messages is None:
        raise RequestError(400, "messages is missing: send the conversation as a list of messages", "messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a list of one message or more", "messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(400, f"{where} must be an object with a role and content", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RequestError(400, f"{where}.role must be system, user or assistant, not {role!r}", f"{where}.role")
        if role == "system" and i and out[-1].role != "system":
            raise RequestError(400, f"{where}: a system message comes before the conversation", f"{where}.role")
        if isinstance(content, list):  # OpenAI's content parts: text ones only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):  # fmt: skip
                raise RequestError(400, f"{where}.content: chargen reads text parts only", f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(400, f"{where}.content must be a string", f"{where}.content")
        if len(content) > MAX_PROMPT:
            raise RequestError(413, f"{where}.content is {len(content):,} characters, over the limit of "
                               f"{MAX_PROMPT:,}", f"{where}.content")  # fmt: skip
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(400, f"{where}.content holds a lone surrogate: send text", f"{where}.content") from None
        out.append(Message(role, content))
    if out[-1].role == "system":
        raise RequestError(400, "the last message must be the user's (or the assistant's, to continue it)",
                           f"messages[{len(out) - 1}].role")  # fmt: skip
    return out


def framing_of(data: dict, server: Server) -> tuple[Framing, tuple[str, ...]]:
    """The request's framing (its prefixes, else the server's) and the stop its answers end at by default."""
    prefixes = {}
    for name in ("user_prefix", "bot_prefix"):
        value = data.get(name, getattr(server.config, name))
        if not isinstance(value, str) or len(value) > 1000:
            raise RequestError(400, f"{name} must be a string of up to 1,000 characters", name)
        prefixes[name] = value
    return framing_for(server.generator, **prefixes)


def fed(message: Message, framing: Framing, stop: tuple[str, ...], before: str, last: bool) -> str:
    """The text `message` is read as, after `before` (everything read so far), as `chargen chat` frames it: an
    earlier answer ends with the stop string the model would have written it with."""
    if message.role == "assistant":
        end = "" if last or not stop or message.content.endswith(stop[0]) else stop[0]
        return message.content + end
    if message.role == "user":
        text = f"{framing.user_prefix}{message.content.removesuffix(chr(10))}\n{framing.bot_prefix}"
    else:
        text = message.content if message.content.endswith("\n") else message.content + "\n"
    if not before:
        return framing.start + text
    return text if before.endswith("\n") else "\n" + text


def route(server: Server):
    """The endpoint of POST /v1/chat/completions on `server`."""
    cfg = server.config

    async def chat_completions(request: Request) -> Response:
        data = await read_body(request, MAX_CHAT_BODY)
        refuse_unsupported(data)
        messages = messages_of(data)
        framing, stop = framing_of(data, server)
        config, n = sample_settings(data, SampleConfig.length)  # as long as `chargen chat` writes
        config = config if data.get("stop") is not None else replace(config, stop=stop)
        streaming = wants_stream(data)
        session = server.session(data["session"]) if "session" in data else None
        if session is not None:
            if session.busy:
                raise RequestError(409, "the session is writing an answer already: wait for it", "session")
            if n != 1:
                raise RequestError(400, "a chat in a session writes one answer: n must be 1", "n")
            session.busy = True  # now, before any wait: a second request on it gets 409
        try:
            chat, k = begin(session, messages, framing, config.seed, server)
            primed, text = chat.state(k) if chat else (None, "")
            read = []
            for i in range(k, len(messages)):
                piece = fed(messages[i], framing, config.stop, text, i == len(messages) - 1)
                primed = await server.prime(piece, primed, field=f"messages[{i}].content")
                read.append(Said(messages[i], piece, primed))
                text += piece
        except BaseException:
            if session is not None:
                session.busy = False
            raise
        if chat is None:
            streams = server.start(primed, config, n)
        else:
            streams = [server.engine.add(primed.copy(), config, chat.rng, asyncio.Queue())]
        key, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        going_on = messages[-1].role == "assistant"  # the answer continues the last message

        def finished(stream: Stream) -> None:
            if session is not None:
                end(session, chat, k, read, stream, going_on)

        unknown = sorted({c for said in read for c in said.after.unknown})  # left out of what the model read

        def body(kind: str, choices: list[dict], first: bool = True) -> dict:
            out = {"id": key, "object": kind, "created": created, "model": cfg.model_name, "choices": choices}
            out |= {"session": data["session"]} if session is not None else {}
            return out | ({"unknown_characters": unknown} if unknown and first else {})

        if streaming:
            begun: set[int] = set()

            def chunk(stream: Stream, piece: str, why: str | None) -> dict:
                first = not begun  # the first event says what was left out
                delta = {"content": piece} | ({} if stream.index in begun else {"role": "assistant"})
                begun.add(stream.index)
                choice = {"index": stream.index, "delta": delta, "finish_reason": why}
                return body("chat.completion.chunk", [choice], first)

            return event_stream(streams, finished, chunk)
        await whole(request, streams, finished)
        choices = [
            {"index": s.index, "message": {"role": "assistant", "content": "".join(s.text)}, "finish_reason": s.finish}
            for s in streams
        ]
        read_chars = sum(len(s.text) for s in read)
        written = sum(len("".join(s.text)) for s in streams)
        usage = {"prompt_tokens": read_chars, "completion_tokens": written, "total_tokens": read_chars + written}
        return JSONResponse(body("chat.completion", choices) | {"usage": usage})

    return chat_completions


def begin(session: Session | None, messages: list[Message], framing: Framing, seed: int | None, server: Server):
    """The session's chat for a request, and how many of its leading messages the chat has read (none without a
    session; none, and the chat begun afresh, where the history or the framing is not the session's)."""
    if session is None:
        return None, 0
    chat = session.chat
    k = chat.shared(messages) if chat is not None and chat.framing == framing else 0
    if k == 0:  # from the session's state before any chat: its prime, or a fresh state
        base, base_text = (chat.base, chat.base_text) if chat else (session.primed, session.text)
        base = base if base_text else None  # a session that has read nothing chats from a fresh state, as a chat
        session.chat = Chat(framing, base, base_text, server.generator.rng(seed), seed)
    elif seed is not None and seed != chat.seed:
        chat.rng, chat.seed = server.generator.rng(seed), seed
    return session.chat, k


def end(session: Session, chat: Chat, k: int, read: list[Said], stream: Stream, going_on: bool) -> None:
    """After an answer in a session: the messages it read, and the answer unless its client left, on its path
    (an answer that continues the last message becomes part of it); the session's state and text after them."""
    path = chat.path[:k] + read
    if not stream.cancelled:
        written, held = "".join(stream.text), stream.row.stop.held  # held: the stop string, read, not shown
        if going_on:
            last = path.pop()
            path.append(Said(Message("assistant", last.message.content + written), last.text + written + held,
                             stream.primed))  # fmt: skip
        else:
            path.append(Said(Message("assistant", written), written + held, stream.primed))
    chat.path = path
    session.primed, session.text = chat.state(len(path))
    session.busy, session.used = False, time.monotonic()
