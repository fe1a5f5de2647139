"""chargen serve: the API through an ASGI client and a real uvicorn, the official openai client, the page."""

import base64
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch
from starlette.testclient import TestClient

import chargen
from chargen.config import ServeConfig
from chargen.inspect import page as inspect
from chargen.score import evaluate
from chargen.serve.app import create_app

from .conftest import chromium, read_page


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return chargen.load(tiny_ckpt, "cpu")


@pytest.fixture()
def client(model):
    with TestClient(create_app(model, inspector=inspect.maker(model))) as c:
        yield c


def complete(client, **body):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def streamed(client, **body) -> list[dict]:
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_a_completion_is_what_generate_writes(client, model):
    data = complete(client, prompt="the king", max_tokens=60, temperature=0.8, seed=5)
    want = "".join(model.generate("the king", length=60, temp=0.8, seed=5))
    assert data["object"] == "text_completion" and data["choices"][0]["text"] == want
    assert data["choices"][0]["finish_reason"] == "length" and data["usage"]["completion_tokens"] == 60
    stopped = complete(client, prompt="the king", max_tokens=200, seed=5, stop=["\n"])["choices"][0]
    assert stopped["finish_reason"] == "stop" and "\n" not in stopped["text"]


def test_penalties_work_as_in_generate(client, model):
    body = dict(prompt="the king", max_tokens=80, temperature=0, frequency_penalty=0.5, presence_penalty=0.2)
    want = "".join(model.generate("the king", length=80, temp=0, frequency_penalty=0.5, presence_penalty=0.2))
    plain = complete(client, prompt="the king", max_tokens=80, temperature=0)["choices"][0]["text"]
    assert complete(client, **body)["choices"][0]["text"] == want != plain
    assert client.post("/v1/completions", json={"prompt": "a", "presence_penalty": 3}).status_code == 400


def test_streamed_pieces_make_the_same_texts_for_each_of_n(client):
    whole = complete(client, prompt="the", max_tokens=40, seed=1, n=3)["choices"]
    chunks = streamed(client, prompt="the", max_tokens=40, seed=1, n=3)
    for i in range(3):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert "".join(c["text"] for c in mine) == whole[i]["text"]
        assert [c["finish_reason"] for c in mine][-1] == "length" and mine[0]["finish_reason"] is None
    assert len({c["text"] for c in whole}) > 1  # each stream draws on its own


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({}, 400, "prompt"),
        ({"prompt": 3}, 400, "prompt"),
        ({"prompt": "a", "temperature": -1}, 400, "temperature"),
        ({"prompt": "a", "top_p": 2}, 400, "top_p"),
        ({"prompt": "a", "top_k": 1.5}, 400, "top_k"),
        ({"prompt": "a", "n": 0}, 400, "n"),
        ({"prompt": "a", "max_tokens": 10**9}, 400, "max_tokens"),
        ({"prompt": "a", "stop": [1]}, 400, "stop"),
        ({"prompt": "a", "stop": ["x" * 100_000] * 4}, 400, "stop"),  # a step's cost is bounded by the stops
        ({"prompt": "a", "temperature": 1e39}, 400, "temperature"),  # past float32: it wrote only U+FFFD
        ({"prompt": "a", "seed": "x"}, 400, "seed"),
        ({"prompt": "a" * 200_000}, 413, "prompt"),
        ({"prompt": "a", "session": "sess-nope"}, 404, "session"),
    ],
)
def test_bad_requests_get_a_4xx_a_person_can_act_on(client, body, status, param):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in error["message"]
    assert complete(client, prompt="a", max_tokens=5)["choices"][0]["text"]  # the server is unharmed


@pytest.mark.parametrize(
    "path, body, status, param, says",
    [
        ("/v1/completions", b'{"prompt": "a", "max_tokens": NaN}', 400, None, "NaN is not a JSON number"),
        ("/v1/completions", b'{"prompt": "a", "top_k": Infinity}', 400, None, "Infinity is not a JSON number"),
        ("/v1/completions", b'{"prompt": "a", "temperature": 1e999}', 400, None, "too large"),
        ("/v1/completions", b"[" * 100_000 + b"]" * 100_000, 400, None, "nested too deep"),
        ("/v1/completions", b'{"prompt": "a", "seed": ' + b"7" * 5000 + b"}", 400, None, "5000 digits"),
        ("/v1/score", b'{"text": "ab\\ud800cd"}', 400, "text", "lone surrogate"),
        ("/v1/completions", b'{"prompt": "a", "stream": "false"}', 400, "stream", "true or false"),
        ("/v1/completions", b'{"prompt": "a", "echo": true}', 400, "echo", "leave it out"),
        ("/v1/completions", b'{"prompt": "a", "logprobs": 3}', 400, "logprobs", "leave it out"),
    ],
)
def test_hostile_bodies_are_a_4xx_not_a_traceback(client, path, body, status, param, says):
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert complete(client, prompt="a", max_tokens=5)["choices"][0]["text"]  # the server is unharmed


def test_a_body_a_page_elsewhere_could_send_is_refused(client):
    response = client.post("/v1/completions", content=b'{"prompt": "a"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.json()["error"]["message"]


def test_bearer_is_read_in_any_case_and_a_foreign_host_is_refused(model):
    with TestClient(create_app(model, ServeConfig(api_key="s3cret"))) as c:
        for scheme in ("Bearer", "bearer", "BEARER"):
            answer = c.post("/v1/completions", json={"prompt": "a"}, headers={"Authorization": f"{scheme} s3cret"})
            assert answer.status_code == 200, scheme
    with TestClient(create_app(model, hosts=["localhost", "127.0.0.1"]), base_url="http://localhost") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"Host": "evil.example"}).status_code == 400  # a rebound name


def test_a_prompt_with_characters_the_model_never_saw_says_which(client, model):
    data = complete(client, prompt="the king ☃ is 🙂", max_tokens=10, seed=1)
    assert data["unknown_characters"] == ["☃", "🙂"]
    assert data["choices"][0]["text"] == "".join(model.generate("the king ☃ is 🙂", length=10, seed=1))
    events = streamed(client, prompt="☃ the", max_tokens=10, seed=1)
    assert events[0]["unknown_characters"] == ["☃"] and all("unknown_characters" not in e for e in events[1:])
    assert "unknown_characters" not in complete(client, prompt="the king", max_tokens=5)


def test_unknown_routes_and_methods_answer_json_naming_the_routes(client):
    for method, path, status in (
        ("GET", "/v2/nothing", 404),
        ("POST", "/v1/chat/nope", 404),
        ("GET", "/v1/score", 405),
    ):
        response = client.request(method, path)
        assert response.status_code == status and response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert path in error["message"] and error["type"] in ("not_found_error", "invalid_request_error")
    assert "/v1/completions" in client.get("/v2/nothing").json()["error"]["message"]


def test_port_0_says_the_port_it_got_and_serves_there(tiny_ckpt):
    args = [sys.executable, "-m", "chargen", "serve", "-c", str(tiny_ckpt), "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    try:
        said = ""
        while "(Ctrl-C stops)" not in said:
            said += proc.stderr.readline()
        port = int(said.split("http://127.0.0.1:")[1].split("/")[0])
        assert port != 0 and httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def test_serving_beyond_this_machine_without_a_key_warns_and_a_key_on_the_command_line_too(tiny_ckpt, tmp_path):
    with socket.socket() as taken:  # the run stops at the port, after its warnings: nothing is served
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        serve = [sys.executable, "-m", "chargen", "serve", "-c", str(tiny_ckpt), "--port", port, "--device", "cpu"]
        public = subprocess.run([*serve, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
        assert "with no API key" in public.stderr and "CHARGEN_API_KEY" in public.stderr
        flagged = subprocess.run([*serve, "--api-key", "s3cret"], capture_output=True, text=True, timeout=60)
        assert "process list" in flagged.stderr
        key = tmp_path / "key"
        key.write_text("s3cret\n")
        quiet = subprocess.run([*serve, "--api-key-file", str(key)], capture_output=True, text=True, timeout=60)
        assert "process list" not in quiet.stderr and "no API key" not in quiet.stderr


def test_a_port_that_is_taken_is_one_line_before_serving(tiny_ckpt):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "chargen", "serve", "-c", str(tiny_ckpt), "--port", str(port), "--device", "cpu"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0 and "serving" not in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"port {port}" in done.stderr and "taken" in done.stderr and "--port" in done.stderr


def test_a_body_that_is_not_json_or_too_large(client):
    assert client.post("/v1/completions", content=b"{nope").status_code == 400
    assert client.post("/v1/completions", content=b"x" * (2 << 20)).status_code == 413


def test_an_api_key_guards_every_route_but_health(model):
    with TestClient(create_app(model, ServeConfig(api_key="s3cret"))) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert (
            c.post("/v1/completions", json={"prompt": "a"}, headers={"Authorization": "Bearer no"}).status_code == 401
        )
        ok = c.post(
            "/v1/completions", json={"prompt": "a", "max_tokens": 3}, headers={"Authorization": "Bearer s3cret"}
        )
        assert ok.status_code == 200


def test_a_session_carries_the_state_between_completions(client, model):
    sid = client.post("/v1/sessions", json={"prime": "the king "}).json()["id"]
    first = complete(client, session=sid, prompt="is", max_tokens=30, seed=2)["choices"][0]["text"]
    assert first == "".join(model.generate("the king is", length=30, seed=2))
    second = complete(client, session=sid, prompt="\n", max_tokens=30, seed=3)["choices"][0]["text"]
    assert client.get(f"/v1/sessions/{sid}").json()["text"] == "the king is" + first + "\n" + second
    primed = model.prime("the king is" + first + "\n")
    from chargen.config import SampleConfig

    want = "".join(t for _, t in model.stream(primed, SampleConfig(length=30, seed=3)))
    assert second == want  # the second picks up exactly where the first left the state
    assert client.delete(f"/v1/sessions/{sid}").json()["deleted"] is True
    assert client.get(f"/v1/sessions/{sid}").status_code == 404


def test_a_served_session_and_a_chat_fed_the_same_turns_end_in_equal_states(model):
    """The stop string a completion ends at is read by the state: the session's text keeps it, as a chat's turn
    does, so a session and a chat of the same turns hold the same text and the same state."""
    from chargen.chat.conversation import Conversation, Framing
    from chargen.config import SampleConfig

    chat = Conversation(model, SampleConfig(length=40, stop=("\n",)), Framing("ROMEO:\n", "JULIET:\n"))
    with TestClient(create_app(model)) as client:
        sid, stops = None, 0
        for k, line in enumerate(["the king is dead", "long live the queen", "and all her men"]):
            chat.rng.manual_seed(k)
            chat.feed(line)
            answer = "".join(chat.answer())
            if sid is None:
                sid, prompt = client.post("/v1/sessions", json={"prime": chat.turn.fed}).json()["id"], ""
            else:
                prompt = chat.turn.fed
            body = dict(session=sid, prompt=prompt, max_tokens=40, seed=k, temperature=0.8, stop=["\n"])
            choice = complete(client, **body)["choices"][0]
            stops += choice["finish_reason"] == "stop"
            assert answer == choice["text"] + ("\n" if choice["finish_reason"] == "stop" else "")
        session = client.app.state.server.sessions[sid]
        assert stops >= 1  # some answer ended at the stop string, which both states have read
        assert session.text == chat.text == client.get(f"/v1/sessions/{sid}").json()["text"]
        assert all(torch.equal(a, b) for a, b in zip(session.primed.state, chat.turn.after.state))
        assert torch.equal(session.primed.logits, chat.turn.after.logits)


def test_a_served_subword_model_streams_whole_characters(tmp_path):
    """A SentencePiece model whose likeliest draws are byte pieces: 200 streamed completions, not one U+FFFD."""
    from chargen.config import ModelConfig
    from chargen.generate import Generator
    from chargen.model import CharLM
    from chargen.subword import SentencePieceTokenizer

    from .conftest import make_text
    from .test_subword import MIXED

    sp = SentencePieceTokenizer.train((make_text(300) + MIXED * 20).split("\n"), vocab_size=400)
    torch.manual_seed(0)
    model = CharLM(sp.vocab_size, ModelConfig(layers=1, hidden=16, embed=8))
    with torch.no_grad():
        model.head.bias[list(sp.byte_pieces())] += 4.0  # make byte pieces the likeliest draws
    texts = [""] * 200
    with TestClient(create_app(Generator(model, sp))) as client:
        for first in range(0, 200, 10):
            for event in streamed(client, prompt="x", max_tokens=30, temperature=1.0, n=10, seed=first):
                choice = event["choices"][0]
                texts[first + choice["index"]] += choice["text"]
    assert all(len(t) == 30 for t in texts) and not any("\ufffd" in t for t in texts)


def test_sessions_are_capped_and_expire(model):
    with TestClient(create_app(model, ServeConfig(max_sessions=2, session_ttl=0.2))) as c:
        a, b = (c.post("/v1/sessions", json={}).json()["id"] for _ in range(2))
        c.get(f"/v1/sessions/{a}")  # a is now the more recently used
        third = c.post("/v1/sessions", json={}).json()["id"]
        assert c.get(f"/v1/sessions/{b}").status_code == 404  # the least recently used made room
        assert c.get(f"/v1/sessions/{a}").status_code == c.get(f"/v1/sessions/{third}").status_code == 200
        time.sleep(0.3)
        assert c.get(f"/v1/sessions/{a}").status_code == 404  # idle past its time


def test_an_inspect_page_by_link_opens_where_a_tab_can_go_without_a_key(model):
    with TestClient(create_app(model, ServeConfig(api_key="k"), inspector=inspect.maker(model))) as c:
        key = {"Authorization": "Bearer k"}
        made = c.post("/v1/inspect", json={"text": "the king is dead", "link": True}, headers=key)
        assert made.status_code == 201 and made.json()["url"].startswith("/inspect/")
        page = c.get(made.json()["url"])  # no key: the link's own key is the pass
        assert page.status_code == 200 and read_page(page.text)["text"] == "the king is dead"
        assert c.get("/inspect/guessed").status_code == 404
        bad = c.post("/v1/inspect", json={"text": "the king", "link": "yes"}, headers=key)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "link"


def test_scores_sum_to_the_eval_figure(client, model):
    text = "the queen and all her men shall ride at dawn"
    result = client.post("/v1/score", json={"text": text, "top_k": 3}).json()
    assert result["chars"][0]["bits"] is None and len(result["chars"]) == len(text)
    ids = model.tokenizer.encode(text)
    nats = evaluate(model.model, ids, torch.device("cpu"))
    assert sum(c["bits"] for c in result["chars"][1:]) * math.log(2) == pytest.approx(nats, rel=1e-3)
    top = result["chars"][5]["top"]
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] > 0


# -- a real server ---------------------------------------------------------------------------------


def start_server(ckpt) -> tuple[subprocess.Popen, str]:
    """`chargen serve -c ckpt` in a real process on a free port, answering: the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "chargen", "serve", "-c", str(ckpt), "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(proc.stderr.read())
    return proc, url


@contextmanager
def serving(ckpt):
    """`chargen serve -c ckpt` in a real process on a free port: its URL, until the block ends (then Ctrl-C)."""
    proc, url = start_server(ckpt)
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tiny_ckpt):
    with serving(tiny_ckpt) as url:
        yield url


def test_the_openai_client_streams_a_completion(server):
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key="unused")
    assert len(client.models.list().data) == 1
    pieces = [
        chunk.choices[0].text
        for chunk in client.completions.create(model="x", prompt="the", max_tokens=3000, seed=1, stream=True)
    ]
    assert len("".join(pieces)) == 3000 and len(pieces) > 1  # streamed in pieces as it was written
    whole = client.completions.create(model="x", prompt="the", max_tokens=3000, seed=1)
    assert whole.choices[0].text == "".join(pieces)


def test_concurrent_requests_are_stepped_together(server):
    results, errors = [], []

    def one(i):
        try:
            r = httpx.post(server + "/v1/completions", json={"prompt": "the", "max_tokens": 300, "seed": i}, timeout=60)
            results.append(r.json()["choices"][0]["text"])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8 and all(len(r) == 300 for r in results)
    assert httpx.get(server + "/health").json()["peak_streams"] > 1  # one batched step served several requests


def test_a_client_that_leaves_stops_its_stream(server):
    health = lambda: httpx.get(server + "/health").json()
    before = health()["steps"]  # the engine's steps so far: one per character it writes (for every stream)
    with httpx.stream("POST", server + "/v1/completions", json={"prompt": "the", "max_tokens": 20_000, "stream": True},
                      timeout=30) as response:  # fmt: skip
        next(response.iter_lines())
    start = time.monotonic()
    while health()["streams"] and time.monotonic() - start < 5:
        time.sleep(0.02)
    left = health()
    time.sleep(0.2)
    assert left["streams"] == 0 and health()["steps"] == left["steps"]  # nothing is written for it any more
    assert left["steps"] - before < 5_000  # it stopped long before 20,000 characters (a full run takes 20,000 steps)


def test_the_inspect_page_of_a_text_comes_back_whole_while_the_model_writes(server, model):
    """A page made while the engine steps a stream on the same model: the page is the one the model makes alone,
    and the stream writes what it writes alone."""
    text = "the queen and all her men shall ride at dawn\n" * 20
    want = read_page(inspect.maker(model)(text, 300))  # the page of this model, made here with nothing else
    health = lambda: httpx.get(server + "/health").json()
    body = {"prompt": "the", "seed": 1, "max_tokens": 20_000, "stream": True}  # far longer than the page takes
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=30) as response:
        lines = (json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line)
        streamed = next(lines)["choices"][0]["text"]
        writing = health()
        page = httpx.post(server + "/v1/inspect", json={"text": text, "chars": 300}, timeout=60)
        after = health()
        assert writing["streams"] == after["streams"] == 1 and after["steps"] > writing["steps"]  # written throughout
        while len(streamed) < 2_000:
            streamed += next(lines)["choices"][0]["text"]
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.rstrip().endswith("</html>")
    data = read_page(page.text)
    assert data["text"] == want["text"] == text[:300] and len(data["surprisal"]["bits"]) == 300
    assert data["surprisal"]["bits"][1:] == pytest.approx(want["surprisal"]["bits"][1:], abs=1e-3)
    assert data["model"] == want["model"]
    assert streamed[:2_000] == "".join(model.generate("the", length=2_000, seed=1))  # as written with no page
    bad = httpx.post(server + "/v1/inspect", json={"text": text, "chars": 10**9})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "chars"


def test_a_client_that_leaves_a_whole_completion_stops_it_too(server):
    """Not streamed: the server holds the text until the end, and still stops writing once the client is gone."""
    health = lambda: httpx.get(server + "/health").json()
    before = health()["steps"]
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server + "/v1/completions", json={"prompt": "the", "max_tokens": 20_000}, timeout=0.5)
    start = time.monotonic()
    while health()["streams"] and time.monotonic() - start < 10:
        time.sleep(0.02)
    left = health()
    time.sleep(0.2)
    assert left["streams"] == 0 and health()["steps"] == left["steps"]
    assert left["steps"] - before < 10_000  # it stopped long before 20,000 characters


def test_a_session_writes_one_completion_at_a_time(server):
    client = httpx.Client(base_url=server, timeout=30)
    sid = client.post("/v1/sessions", json={"prime": "the"}).json()["id"]
    body = {"session": sid, "prompt": " king", "max_tokens": 20_000, "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:  # a real server streams as it goes
        lines = response.iter_lines()  # held: a dropped iterator closes the connection
        next(lines)
        busy = client.post("/v1/completions", json={"session": sid, "prompt": "x"})
        assert busy.status_code == 409 and busy.json()["error"]["param"] == "session"
    for _ in range(100):  # the client left: the session is free again, its text as before
        if not client.get(f"/v1/sessions/{sid}").json()["busy"]:
            break
        time.sleep(0.05)
    assert client.get(f"/v1/sessions/{sid}").json() == {"id": sid, "object": "session", "text": "the", "busy": False}


# -- the page in a real browser ----------------------------------------------------------------------


def pixels(browser, png: bytes) -> dict:
    """What a screenshot shows, counted by the browser itself (no image library needed): its pixels, those with
    ink (darker than the page's light greys), and those tinted (not grey), with how many distinct tints."""
    tab = browser.new_page()  # a blank tab of no policy of its own
    counted = tab.evaluate(
        """async (src) => { const img = new Image(); img.src = src; await img.decode();
        const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data, tints = new Set(); let ink = 0, tinted = 0;
        for (let i = 0; i < d.length; i += 4) {
          const [r, gr, b] = [d[i], d[i + 1], d[i + 2]];
          if (r + gr + b < 3 * 160) ink++;
          if (Math.max(r, gr, b) - Math.min(r, gr, b) > 24) { tinted++; tints.add((r << 16) | (gr << 8) | b); }
        }
        return { all: d.length / 4, ink, tinted, tints: tints.size }; }""",
        "data:image/png;base64," + base64.b64encode(png).decode(),
    )
    tab.close()
    return counted


def test_the_page_writes_and_colours(server, tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        page.fill("#prompt", "the queen")
        page.fill("#max_tokens", "200")
        page.fill("#seed", "1")
        page.click("#go")
        page.wait_for_selector("#go:not([disabled])")  # the page's policy allows no eval: wait by selectors
        written = page.locator("#out").screenshot(path=str(tmp_path / "write.png"))
        assert page.text_content("#out").startswith("the queen") and len(page.text_content("#out")) >= 9 + 200
        page.click("#tab-score")
        page.fill("#score-text", "the king is dead")
        page.click("#score-go")
        page.wait_for_selector("#colored span[title]")
        assert len(page.query_selector_all("#colored span")) == len("the king is dead")
        coloured = page.locator("#colored").screenshot(path=str(tmp_path / "score.png"))
        written, coloured = pixels(browser, written), pixels(browser, coloured)
        browser.close()
    assert not errors
    assert written["ink"] > 1_000, written  # its 209 characters drawn in ink, not a blank box
    assert coloured["tinted"] > 300 and coloured["tints"] >= 5, coloured  # its characters in shades of surprisal


def test_a_client_that_leaves_mid_body_costs_no_traceback(tiny_ckpt):
    """A body announced as 10 GB, cut off after 64 KB: the server forgets it quietly and answers the next client."""
    proc, url = start_server(tiny_ckpt)
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            head = f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            s.sendall(f"{head}Content-Length: {10 * 2**30}\r\n\r\n".encode() + b'{"prompt": "' + b"a" * 65536)
            time.sleep(0.5)
        time.sleep(0.5)
        after = httpx.post(url + "/v1/completions", json={"prompt": "the", "max_tokens": 5, "seed": 1}, timeout=30)
        assert after.status_code == 200 and len(after.json()["choices"][0]["text"]) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
