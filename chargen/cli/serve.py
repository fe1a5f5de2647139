"""`chargen serve`: the model behind a local HTTP API (OpenAI-style completions, sessions, scores) and a page."""

from __future__ import annotations

from pathlib import Path

import click

from chargen.cli import cli
from chargen.cli.options import checkpoint_option, device_option, resolve_checkpoint
from chargen.config import ServeConfig

S = ServeConfig


@cli.command()
@checkpoint_option
@click.option("--host", default=S.host, show_default=True, help="Address to listen on (this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=S.port, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    envvar="CHARGEN_API_KEY",
    help="Require 'Authorization: Bearer KEY' on every route but /health. Better from CHARGEN_API_KEY or "
    "--api-key-file: a flag shows in the process list.",
)
@click.option("--api-key-file", type=click.Path(dir_okay=False, exists=True), help="Read the API key from this file.")
@click.option("--max-sessions", type=click.IntRange(min=1), default=S.max_sessions, show_default=True,
              help="Sessions kept; at the cap the least recently used idle one is dropped.")  # fmt: skip
@click.option("--session-ttl", type=click.FloatRange(min=1), default=S.session_ttl, show_default=True,
              help="Seconds a session may sit idle before it expires.")  # fmt: skip
@click.option("--user-prefix", default=S.user_prefix, help='Chat: put before each user message, e.g. "ROMEO:\\n".')
@click.option("--bot-prefix", default=S.bot_prefix, help='Chat: put before each answer, e.g. "JULIET:\\n".')
@device_option
@click.pass_context
def serve(ctx, checkpoint, host, port, api_key, api_key_file, max_sessions, session_ttl, user_prefix, bot_prefix,
          device) -> None:  # fmt: skip
    """Serve a model over HTTP, with a page to write with it at http://HOST:PORT/.

    \b
      chargen serve -c checkpoints/tinyshakespeare/best.pt
      curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
           -d '{"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0.8}'
    """
    import uvicorn

    from chargen.cli import console
    from chargen.config import unescape
    from chargen.generate import Generator
    from chargen.inspect.page import maker
    from chargen.serve.app import create_app

    if api_key_file:
        api_key = Path(api_key_file).read_text(encoding="utf-8").strip()
    elif api_key and ctx.get_parameter_source("api_key").name == "COMMANDLINE":
        console.warn("--api-key shows in the process list (ps) to anyone on this machine: use CHARGEN_API_KEY "
                     "or --api-key-file")  # fmt: skip
    local = host in LOOPBACK
    if not api_key and not local:
        console.warn(f"serving on {host} with no API key: anyone who can reach this machine can use the model "
                     "(set CHARGEN_API_KEY or --api-key-file)")  # fmt: skip
    path = resolve_checkpoint(checkpoint)
    generator = Generator.load(path, device)
    name = path.parent.name if path.stem in ("best", "last") else path.stem  # checkpoints/NAME/best.pt: NAME
    settings = dict(api_key=api_key or None, max_sessions=max_sessions, session_ttl=session_ttl, model_name=name,
                    user_prefix=unescape(user_prefix), bot_prefix=unescape(bot_prefix))  # fmt: skip
    config = ServeConfig(host, port, **settings)
    # served on this machine only, it answers requests for this machine only (a page elsewhere cannot rebind a name)
    app = create_app(generator, config, inspector=maker(generator), hosts=LOOPBACK if local else None)
    sock = listening(host, port)  # before saying it serves: a port that is taken is one clear line
    port = sock.getsockname()[1]  # the one it got, with --port 0
    shown = f"[{host}]" if ":" in host else host
    console.info(f"serving {generator.describe()}\nat http://{shown}:{port}/ (Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def listening(host: str, port: int):
    """A socket bound to host:port and listening; ChargenError when the port is taken or the host is not here."""
    import errno
    import socket

    from chargen.errors import ChargenError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ChargenError(
                f"port {port} on {host} is taken (another server is listening there): pick another with --port "
                f"(--port 0 takes any free one)"
            ) from None
        raise ChargenError(f"cannot listen on {host}:{port} ({e.strerror}): check --host and --port") from None
    return sock
