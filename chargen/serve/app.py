"""The HTTP server: OpenAI-style completions, sessions that keep a model's state, per-character scores, a page.

Routes (JSON in and out; errors are `{"error": {"message", "type", "param"}}` with a 4xx):

    GET  /health                 ok once the model is loaded, with the streams in flight
    GET  /v1/models              the one model served
    POST /v1/completions         prompt, max_tokens (characters), temperature, top_p, top_k, min_p,
                                 presence_penalty, frequency_penalty, repeat_penalty, stop, seed, n,
                                 stream (server-sent events), session
    POST /v1/chat/completions    messages, read through the chat framing, and the same settings
                                 (chargen/serve/chat.py)
    POST /v1/sessions            a session, optionally primed; a completion naming it continues
                                 from its state and leaves the state after its text there
    GET/DELETE /v1/sessions/ID
    POST /v1/score               per-character surprisal (bits), rank and the model's top guesses
    POST /v1/inspect             text (and chars): the page of `chargen inspect` for it, as HTML; with
                                 link, {"url": "/inspect/KEY"}, where a tab can open it (for 10 minutes)
    GET  /                       the page (chargen/serve/page.html)

Sessions expire after `session_ttl` seconds idle; at `max_sessions` the least recently used
idle one makes room for a new one (a session in use is never dropped; when all are in use a
new one is refused with 429).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chargen import pages
from chargen.chat.conversation import framing_for
from chargen.config import INSPECT_CHARS, INSPECT_MAX_CHARS, MAX_SEED, SampleConfig, ServeConfig
from chargen.errors import ChargenError, SettingError
from chargen.generate import Generator, Primed
from chargen.score import surprisal
from chargen.serve.engine import Engine, Stream

if TYPE_CHECKING:
    from chargen.serve.chat import Chat

MAX_BODY = 1 << 20  # bytes of a request body
MAX_PROMPT = 100_000  # characters of a prompt, a prime or a text to score
MAX_TOKENS = 20_000  # characters one completion may ask for
MAX_N = 16
INSPECT_KEPT, INSPECT_KEPT_S = 16, 600.0  # inspect pages kept to open by link, and for how many seconds
# An inspect page runs its script in an origin of its own, not the server's: whatever a text or a model's name could
# make it do, it cannot read the server page's storage (its API key, its chat) or call the API as that page.
SANDBOXED = {"Content-Security-Policy": "sandbox allow-scripts allow-downloads"}


class RequestError(Exception):
    """A request that cannot be served as sent: a status, a message a person can act on, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status)


@dataclass
class Session:
    """A text the server keeps reading: its state, everything it has read, when it was last used."""

    primed: Primed
    text: str
    used: float
    busy: bool = False
    chat: Chat | None = None  # the messages it has read, once a chat request has used it

    def complete(self, prompt: str, stream: Stream) -> None:
        """After a completion in this session: the state it ended in and the text that state has read, the stop
        string included (as a chat's turn keeps it); a completion whose client left changes nothing."""
        if not stream.cancelled:
            self.primed, self.text = stream.primed, self.text + prompt + "".join(stream.text) + stream.row.stop.held
        self.busy, self.used = False, time.monotonic()


class Server:
    """The app's state: the model, its engine and the sessions."""

    def __init__(self, generator: Generator, config: ServeConfig | None = None) -> None:
        self.generator, self.config = generator, config or ServeConfig()
        self.engine = Engine(generator)
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.created = int(time.time())

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, primed: Primed, text: str) -> str:
        self.expire()
        if len(self.sessions) >= self.config.max_sessions:
            idle = next((k for k, s in self.sessions.items() if not s.busy), None)
            if idle is None:
                raise RequestError(429, "every session is in use: try again when one ends", kind="rate_limit_error")
            del self.sessions[idle]
        key = f"sess-{uuid.uuid4().hex}"
        self.sessions[key] = Session(primed, text, time.monotonic())
        return key

    def session(self, key) -> Session:
        self.expire()
        if not isinstance(key, str) or key not in self.sessions:
            raise RequestError(404, f"there is no session {key!r} (it may have expired): create one", "session")
        self.sessions.move_to_end(key)
        found = self.sessions[key]
        found.used = time.monotonic()
        return found

    def expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if not s.busy and now - s.used > self.config.session_ttl]:
            del self.sessions[key]

    # -- completions ------------------------------------------------------------------------

    async def prime(self, text: str, primed: Primed | None = None, field: str = "prompt") -> Primed:
        try:
            return await asyncio.to_thread(self.generator.prime, text, 1, primed.copy() if primed else None)
        except SettingError as e:  # the library names its own argument: name the request's field
            raise RequestError(400, str(e).replace(e.setting or "", field, 1), field) from None

    def start(self, primed: Primed, config: SampleConfig, n: int) -> list[Stream]:
        """`n` streams from `primed`, each with a generator of its own (seed, seed + 1, ... when seeded),
        all writing to one queue."""
        queue: asyncio.Queue = asyncio.Queue()
        streams = []
        for i in range(n):
            seed = None if config.seed is None else (config.seed + i) % (MAX_SEED + 1)
            streams.append(self.engine.add(primed.copy(), config, self.generator.rng(seed), queue, i))
        return streams


def wants_stream(data: dict) -> bool:
    """The request's `stream`: true or false (absent: false)."""
    value = data.get("stream", False)
    if not isinstance(value, bool):
        raise RequestError(400, f"stream must be true or false, not {value!r}", "stream")
    return value


def event_stream(streams: list[Stream], finished: Callable[[Stream], None], chunk) -> StreamingResponse:
    """The streams as server-sent events: `chunk(stream, text, finish_reason)` per piece of text, one with each
    stream's finish reason, then [DONE]; `finished(streams[0])` once they end or the client leaves (which cancels
    the generator: its streams leave the engine at the next step)."""

    async def events():
        try:
            left, queue = len(streams), streams[0].queue
            while left:
                items = [await queue.get()]
                while not queue.empty():  # what came meanwhile goes out in one event per stream
                    items.append(queue.get_nowait())
                for stream, text, why in merged(items):
                    left -= why is not None
                    yield f"data: {json.dumps(chunk(stream, text, why))}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for s in streams:
                s.cancelled = s.cancelled or s.finish is None
            finished(streams[0])

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def read_body(request: Request, limit: int = MAX_BODY) -> dict:
    """The request's JSON object of at most `limit` bytes; a RequestError for a body that is not one (or not sent
    as one)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json":  # a form or text/plain body may come from a page elsewhere, unasked
        raise RequestError(415, f"the body must be sent as application/json, not {kind}", kind="invalid_request_error")
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, f"the request body is over {limit:,} bytes: send less text")
    except ClientDisconnect:
        raise RequestError(400, "the client left before its request was whole") from None
    try:
        data = json.loads(body or b"{}", parse_constant=_not_a_number, parse_int=_whole, parse_float=_finite)
    except RecursionError:
        raise RequestError(400, "the body is nested too deep: send a flat JSON object") from None
    except (ValueError, UnicodeDecodeError) as e:
        detail = f" ({e})" if isinstance(e, BodyError) else ""
        raise RequestError(400, f"the body is not JSON{detail}: send a JSON object") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    return data


class BodyError(ValueError):
    """A body that parses as Python's JSON but not as JSON a client means."""


def _not_a_number(name: str):
    raise BodyError(f"{name} is not a JSON number")


def _finite(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise BodyError(f"{digits} is too large for any setting")
    return value


def _whole(digits: str) -> int:
    if len(digits.lstrip("-")) > 30:
        raise BodyError(f"a number of {len(digits)} digits is not one any setting takes")
    return int(digits)


def text_field(data: dict, name: str, required: bool = False, default: str = "") -> str:
    value = data.get(name, None)
    if value is None:
        if required:
            raise RequestError(400, f"{name} is missing: send the text to start from", name)
        return default
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]  # OpenAI clients may send a prompt as a list of one
    if not isinstance(value, str):
        raise RequestError(400, f"{name} must be a string", name)
    if len(value) > MAX_PROMPT:
        raise RequestError(413, f"{name} is {len(value):,} characters, over the limit of {MAX_PROMPT:,}", name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON lets a lone surrogate through as \udXXX; it is no character of any text
        raise RequestError(400, f"{name} holds a lone surrogate (an escape such as \\ud800): send text", name) from None
    return value


UNSUPPORTED = ("echo", "logprobs", "best_of", "suffix", "logit_bias", "tools", "functions")


def refuse_unsupported(data: dict) -> None:
    """OpenAI's fields chargen does not do are refused by name, not ignored."""
    for key in UNSUPPORTED:
        if data.get(key) not in (None, False) and not (key == "best_of" and data[key] == 1):
            raise RequestError(400, f"{key} is not something chargen does: leave it out", key)


def sample_settings(data: dict, length: int) -> tuple[SampleConfig, int]:
    """The SampleConfig and n of a completion request, in OpenAI's names (max_tokens are characters; `length`
    when it gives none)."""
    names = {"max_tokens": "length", "temperature": "temp", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
             "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
             "repeat_penalty": "repeat_penalty"}  # fmt: skip
    settings: dict = {}
    for key, field_name in names.items():
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RequestError(400, f"{key} must be a number, not {value!r}", key)
        if key in ("max_tokens", "top_k") and value != int(value):
            raise RequestError(400, f"{key} must be a whole number, not {value!r}", key)
        settings[field_name] = int(value) if key in ("max_tokens", "top_k") else float(value)
    settings.setdefault("length", length)
    if settings["length"] > MAX_TOKENS:
        raise RequestError(400, f"max_tokens is over the limit of {MAX_TOKENS:,} characters", "max_tokens")
    stop = data.get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
            raise RequestError(400, "stop must be a string or a list of up to 4 non-empty strings", "stop")
        settings["stop"] = tuple(stop)
    seed = data.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RequestError(400, f"seed must be a whole number, not {seed!r}", "seed")
        settings["seed"] = seed
    n = data.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise RequestError(400, f"n must be a whole number from 1 to {MAX_N}, not {n!r}", "n")
    try:
        config = SampleConfig(**settings)
    except SettingError as e:
        param = {v: k for k, v in names.items()}.get(e.setting, e.setting)
        message = str(e).replace(e.setting, param, 1) if e.setting else str(e)
        raise RequestError(400, message, param) from None
    return config, n


def create_app(
    generator: Generator,
    config: ServeConfig | None = None,
    inspector: Callable[[str, int], str] | None = None,
    hosts: Sequence[str] | None = None,
) -> Starlette:
    """The ASGI app serving `generator`'s model; `inspector(text, chars)` makes the inspect page of a text under it
    (the CLI passes `chargen.inspect.page.maker(generator)`; without it, /v1/inspect answers 404). With `hosts`,
    a request whose Host header names another is refused."""
    from chargen.serve import chat  # which builds on this module

    server = Server(generator, config)
    cfg = server.config

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                if cfg.api_key and request.url.path != "/health":
                    scheme, _, given = request.headers.get("authorization", "").partition(" ")
                    given = given.strip() if scheme.lower() == "bearer" else ""  # the scheme is case-blind
                    if not secrets.compare_digest(given.encode(), cfg.api_key.encode()):
                        raise RequestError(401, "a valid API key is needed: send Authorization: Bearer KEY")
                return await handler(request)
            except RequestError as e:
                return e.response()
            except ChargenError as e:
                return RequestError(400, str(e)).response()

        return endpoint

    async def health(request: Request) -> Response:
        engine = server.engine
        status = {"streams": engine.streams, "peak_streams": engine.peak, "steps": engine.steps}
        return JSONResponse({"status": "ok", "model": cfg.model_name, **status, "sessions": len(server.sessions)})

    info = None if generator.checkpoint is None else generator.checkpoint.summary()  # as chargen info says
    summary = generator.describe() if generator.checkpoint is None else generator.checkpoint.describe()  # no path
    framing, stop = framing_for(generator, cfg.user_prefix, cfg.bot_prefix)
    chat_defaults = {"user_prefix": framing.user_prefix, "bot_prefix": framing.bot_prefix, "stop": list(stop)}

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": cfg.model_name,
                        "object": "model",
                        "created": server.created,
                        "owned_by": "chargen",
                        "summary": summary,
                        "info": info,
                        "chat": chat_defaults,
                    }
                ],
            }
        )

    async def completions(request: Request) -> Response:
        data = await read_body(request)
        prompt = text_field(data, "prompt", required="session" not in data)
        refuse_unsupported(data)
        config, n = sample_settings(data, cfg.completion_length)
        streaming = wants_stream(data)
        session = server.session(data["session"]) if "session" in data else None
        if session is not None:
            if session.chat is not None:
                raise RequestError(409, "the session holds a chat: go on with it at /v1/chat/completions", "session")
            if session.busy:
                raise RequestError(409, "the session is writing a completion already: wait for it", "session")
            if n != 1:
                raise RequestError(400, "a completion in a session writes one text: n must be 1", "n")
            session.busy = True  # now, before any wait: a second request on it gets 409
        try:
            primed = await server.prime(prompt, session.primed if session else None)
        except BaseException:
            if session is not None:
                session.busy = False
            raise
        streams = server.start(primed, config, n)
        key = f"cmpl-{uuid.uuid4().hex}"

        def finished(stream: Stream) -> None:
            if session is not None:
                session.complete(prompt, stream)

        if streaming:
            unknown = primed.unknown

            def chunk(stream: Stream, text: str, why: str | None) -> dict:
                nonlocal unknown
                choice = {"text": text, "index": stream.index, "logprobs": None, "finish_reason": why}
                body, unknown = completion(key, [choice], unknown), []  # said once, in the first event
                return body

            return event_stream(streams, finished, chunk)
        await whole(request, streams, finished)
        choices = [
            {"text": "".join(s.text), "index": i, "logprobs": None, "finish_reason": s.finish}
            for i, s in enumerate(streams)
        ]
        return JSONResponse(completion(key, choices, primed.unknown) | {"usage": usage(prompt, streams)})

    def completion(key: str, choices: list[dict], unknown: list[str] = ()) -> dict:
        """A completion in OpenAI's shape; with `unknown_characters` when the prompt held characters the model
        never saw (they were left out of what it read)."""
        body = {"id": key, "object": "text_completion", "created": int(time.time()), "model": cfg.model_name,
                "choices": choices}  # fmt: skip
        return body | ({"unknown_characters": list(unknown)} if unknown else {})

    def usage(prompt: str, streams: list[Stream]) -> dict:
        written = sum(len("".join(s.text)) for s in streams)
        return {"prompt_tokens": len(prompt), "completion_tokens": written, "total_tokens": len(prompt) + written}

    async def create_session(request: Request) -> Response:
        data = await read_body(request)
        prime = text_field(data, "prime")
        key = server.new_session(await server.prime(prime, field="prime"), prime)
        return JSONResponse({"id": key, "object": "session", "text": prime}, status_code=201)

    async def one_session(request: Request) -> Response:
        key = request.path_params["key"]
        found = server.session(key)
        if request.method == "DELETE":
            if found.busy:
                raise RequestError(409, "the session is writing a completion: delete it when it ends", "session")
            del server.sessions[key]
            return JSONResponse({"id": key, "object": "session", "deleted": True})
        return JSONResponse({"id": key, "object": "session", "text": found.text, "busy": found.busy})

    async def score(request: Request) -> Response:
        data = await read_body(request)
        text = text_field(data, "text", required=True)
        top = data.get("top_k", 5)
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 20:
            raise RequestError(400, f"top_k must be a whole number from 1 to 20, not {top!r}", "top_k")
        return JSONResponse(await asyncio.to_thread(surprisal, generator, text, top))

    async def inspect(request: Request) -> Response:
        if inspector is None:
            raise RequestError(404, "this server makes no inspect pages: chargen serve does", kind="not_found_error")
        data = await read_body(request)
        text = text_field(data, "text", required=True)
        chars = data.get("chars", INSPECT_CHARS)
        if isinstance(chars, bool) or not isinstance(chars, int) or not 2 <= chars <= INSPECT_MAX_CHARS:
            raise RequestError(
                400, f"chars must be a whole number from 2 to {INSPECT_MAX_CHARS}, not {chars!r}", "chars"
            )
        if len(text) < 2:
            raise RequestError(400, "text must hold at least two characters", "text")
        link = data.get("link", False)
        if not isinstance(link, bool):
            raise RequestError(400, f"link must be true or false, not {link!r}", "link")
        made = await asyncio.to_thread(inspector, text, chars)
        if not link:
            return HTMLResponse(made, headers=SANDBOXED)
        now = time.monotonic()
        for key in [k for k, (when, _) in linked.items() if now - when > INSPECT_KEPT_S]:
            del linked[key]
        while len(linked) >= INSPECT_KEPT:
            linked.popitem(last=False)
        key = secrets.token_urlsafe(16)
        linked[key] = (now, made)
        return JSONResponse({"url": f"/inspect/{key}"}, status_code=201)

    linked: OrderedDict[str, tuple[float, str]] = OrderedDict()  # inspect pages to open by link: when made, page

    async def inspect_page(request: Request) -> Response:
        """An inspect page made with `link`: a document of its own, under its own policy (a page opened from the
        server's page as a blob would run under the server page's policy, which refuses the inspect page's script).
        Its unguessable key is what lets a tab open it, with no API key to send."""
        found = linked.get(request.path_params["key"])
        if found is None or time.monotonic() - found[0] > INSPECT_KEPT_S:
            message = "there is no such inspect page (they are kept 10 minutes): make it again"
            return RequestError(404, message, kind="not_found_error").response()
        return HTMLResponse(found[1], headers=SANDBOXED)

    html = pages.template(__package__)
    policy = (
        f"default-src 'none'; script-src {pages.script_source(html)}; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    async def page(request: Request) -> Response:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @asynccontextmanager
    async def lifespan(app):
        server.engine.start()
        yield
        await server.engine.stop()

    async def no_route(request: Request, exc: Exception) -> Response:
        """Unknown routes and methods answer in the API's JSON too, saying what exists."""
        status = getattr(exc, "status_code", 404)
        where = f"{request.method} {request.url.path}"
        if status == 405:
            message = f"{where}: this route does not take {request.method}"
        else:
            routes = "/v1/completions, /v1/chat/completions, /v1/sessions, /v1/score, /v1/inspect and /v1/models"
            message = f"{where}: there is no such route; the API is {routes}"
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return RequestError(status, message, kind=kind).response()

    app = Starlette(
        exception_handlers={404: no_route, 405: no_route},
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))] if hosts else [],
        routes=[
            Route("/", page),
            Route("/health", guarded(health)),
            Route("/v1/models", guarded(models)),
            Route("/v1/completions", guarded(completions), methods=["POST"]),
            Route("/v1/chat/completions", guarded(chat.route(server)), methods=["POST"]),
            Route("/v1/sessions", guarded(create_session), methods=["POST"]),
            Route("/v1/sessions/{key}", guarded(one_session), methods=["GET", "DELETE"]),
            Route("/v1/score", guarded(score), methods=["POST"]),
            Route("/v1/inspect", guarded(inspect), methods=["POST"]),
            Route("/inspect/{key}", inspect_page),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


def merged(items: list[tuple[Stream, str | None]]) -> list[tuple[Stream, str, str | None]]:
    """(stream, text, finish reason or None) of queued (stream, piece) items: a stream's pieces joined, and
    its end (a None piece) as a finish reason on its last text."""
    out: dict[int, list] = {}
    for stream, piece in items:
        entry = out.setdefault(id(stream), [stream, "", None])
        if piece is None:
            entry[2] = stream.finish
        else:
            entry[1] += piece
    return [tuple(entry) for entry in out.values()]


async def whole(request: Request, streams: list[Stream], finished: Callable[[Stream], None]) -> None:
    """Wait for `streams` to end (or their client to leave), then `finished(streams[0])`."""
    try:
        await watch(request, streams)
    finally:
        for s in streams:
            s.cancelled = s.cancelled or s.finish is None
        finished(streams[0])


async def watch(request: Request, streams: list[Stream]) -> None:
    """Wait for `streams` to end; if the client goes away first, they leave the engine at the next step."""
    left, queue = len(streams), streams[0].queue
    getter = asyncio.ensure_future(queue.get())  # never cancelled while an item may be in it: none is lost
    asked = time.monotonic()
    try:
        while left:
            done, _ = await asyncio.wait({getter}, timeout=0.1)
            if done:
                left -= getter.result()[1] is None
                if left:
                    getter = asyncio.ensure_future(queue.get())
            if left and time.monotonic() - asked >= 0.1:  # asked on a clock: text arrives every step
                asked = time.monotonic()
                if await request.is_disconnected():
                    for s in streams:
                        s.cancelled = True
                    return
    finally:
        getter.cancel()
