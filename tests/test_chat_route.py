"""POST /v1/chat/completions: OpenAI's client on a real server, parity with `chargen chat`, sessions, bad requests."""

import json
import subprocess
import sys
import time

import httpx
import pytest
import torch
from starlette.testclient import TestClient

import chargen
from chargen.chat.conversation import Conversation, Framing
from chargen.config import CHAT_STOP, SampleConfig, ServeConfig
from chargen.serve.app import create_app

from .test_lines import names_ckpt, names_path  # noqa: F401  (fixtures: a model of a list of names)
from .test_serve import serving

LINES = ["the king is dead", "long live the queen", "and all her men"]
PLAY = {"user_prefix": "ROMEO:\n", "bot_prefix": "JULIET:\n"}


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return chargen.load(tiny_ckpt, "cpu")


@pytest.fixture()
def client(model):
    with TestClient(create_app(model)) as c:
        yield c


def chat(client, **body) -> dict:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def talk(client, lines, **body) -> list[dict]:
    """A conversation of `lines`, each sent with the history and the answers so far: the responses."""
    messages, out = [], []
    for line in lines:
        messages.append({"role": "user", "content": line})
        out.append(chat(client, messages=messages, **body))
        messages.append(out[-1]["choices"][0]["message"])
    return out


def test_the_openai_client_chats_streaming_and_not(tiny_ckpt):
    from openai import OpenAI

    with serving(tiny_ckpt) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        messages = [{"role": "system", "content": "A play."}, {"role": "user", "content": "the king"}]
        chunks = list(client.chat.completions.create(model="x", messages=messages, max_tokens=300, seed=3,
                                                     stream=True))  # fmt: skip
        whole = client.chat.completions.create(model="x", messages=messages, max_tokens=300, seed=3)
        models = client.models.list().data
        session = client.post("/sessions", body={}, cast_to=dict)["id"]  # as docs/serve.md shows
        carried = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="x", messages=messages, max_tokens=300, seed=3, stream=True, extra_body={"session": session}
            )
        )
        text = httpx.get(f"{url}/v1/sessions/{session}").json()["text"]
    assert chunks[0].choices[0].delta.role == "assistant" and len(chunks) > 2  # streamed in pieces
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == streamed and 0 < len(streamed) <= 300
    assert whole.choices[0].finish_reason == chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens == len("A play.\nthe king\n")  # read as `chargen chat` frames it
    assert carried == streamed and text.startswith("A play.\nthe king\n" + carried)  # the session read the turn
    info = json.loads(subprocess.run([sys.executable, "-m", "chargen", "info", "--json", str(tiny_ckpt)],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert models[0].info == info and models[0].chat["stop"] == list(CHAT_STOP)  # what chargen info says


def test_a_session_chats_as_chargen_chat_fed_the_same_turns(client, model, tiny_ckpt):
    """The same turns and seed through `chargen chat` in a pipe and through a session: the same text, the same
    state, and each turn reads only its own line."""
    args = [sys.executable, "-m", "chargen", "chat", "-c", str(tiny_ckpt), "--device", "cpu", "--seed", "7",
            "-l", "40", "-t", "0.8", "--user-prefix", "ROMEO:\\n", "--bot-prefix", "JULIET:\\n"]  # fmt: skip
    cli = subprocess.run(args, input="\n".join(LINES) + "\n", capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    sid = client.post("/v1/sessions", json={}).json()["id"]
    answers = talk(client, LINES, session=sid, seed=7, max_tokens=40, temperature=0.8, **PLAY)
    text = client.get(f"/v1/sessions/{sid}").json()["text"]
    assert cli.stdout == text + ("" if text.endswith("\n") else "\n")
    conversation = Conversation(model, SampleConfig(length=40, temp=0.8, seed=7, stop=CHAT_STOP), Framing(**PLAY))
    for line, answer in zip(LINES, answers):
        conversation.feed(line)
        assert answer["usage"]["prompt_tokens"] == len(conversation.turn.fed)  # the new line only, not the history
        assert conversation._unstopped("".join(conversation.answer())) == answer["choices"][0]["message"]["content"]
    session = client.app.state.server.sessions[sid]
    assert session.text == conversation.text
    assert all(torch.equal(a, b) for a, b in zip(session.primed.state, conversation.turn.after.state))


def test_without_a_session_the_history_is_read_with_each_answer_ending_at_its_stop(client, model):
    """A request without a session reads every message from a fresh state, an earlier answer with the stop string
    it ended at: where every answer stopped, it writes what the session wrote."""
    body = dict(seed=4, max_tokens=60, temperature=0.8, stop=["\n"], **PLAY)
    sid = client.post("/v1/sessions", json={}).json()["id"]
    answers = talk(client, LINES[:2], session=sid, **body)
    assert all(a["choices"][0]["finish_reason"] == "stop" for a in answers)
    history = [{"role": "user", "content": LINES[0]}, answers[0]["choices"][0]["message"],
               {"role": "user", "content": LINES[1]}]  # fmt: skip
    sessionless = chat(client, messages=history, **body)
    assert sessionless["usage"]["prompt_tokens"] > answers[1]["usage"]["prompt_tokens"]  # it read everything
    fresh = model.prime(client.get(f"/v1/sessions/{sid}").json()["text"].removesuffix(
        answers[1]["choices"][0]["message"]["content"] + "\n"))  # fmt: skip
    want = "".join(t for _, t in model.stream(fresh, SampleConfig(length=60, temp=0.8, seed=4, stop=("\n",))))
    assert sessionless["choices"][0]["message"]["content"] == want


def test_retry_undo_and_a_history_that_disagrees_with_the_session(client):
    """A retry (the history without its answer) reads nothing and draws anew; a history that shares no first message
    with the session starts it afresh, answered as the same request without a session."""
    body = dict(seed=5, max_tokens=50, temperature=1.0, **PLAY)
    sid = client.post("/v1/sessions", json={}).json()["id"]
    first, second = talk(client, LINES[:2], session=sid, **body)
    asked = [{"role": "user", "content": LINES[0]}, first["choices"][0]["message"],
             {"role": "user", "content": LINES[1]}]  # fmt: skip
    retried = chat(client, messages=asked, session=sid, **body)
    assert retried["usage"]["prompt_tokens"] == 0  # the state after the question was kept
    assert retried["choices"][0]["message"]["content"] != second["choices"][0]["message"]["content"]
    undone = chat(client, messages=asked[:1], session=sid, **body)  # back a turn: the first line, answered anew
    assert undone["usage"]["prompt_tokens"] == 0
    edited = [{"role": "user", "content": "long live the king"}]
    alone = chat(client, messages=edited, **body)
    again = chat(client, messages=edited, session=sid, **body)
    assert again["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
    text = client.get(f"/v1/sessions/{sid}").json()["text"]
    assert text.startswith("ROMEO:\nlong live the king\nJULIET:\n") and LINES[0] not in text  # the old chat is gone


def test_a_last_message_from_the_assistant_is_continued(client):
    sid = client.post("/v1/sessions", json={}).json()["id"]
    body = dict(session=sid, seed=1, max_tokens=20, temperature=0.8)
    messages = [{"role": "user", "content": "the king"}]
    answer = chat(client, messages=messages, **body)["choices"][0]["message"]
    more = chat(client, messages=[*messages, answer], **body)
    assert more["usage"]["prompt_tokens"] == 0 and len(more["choices"][0]["message"]["content"]) == 20
    whole = {"role": "assistant", "content": answer["content"] + more["choices"][0]["message"]["content"]}
    after = chat(client, messages=[*messages, whole, {"role": "user", "content": "and"}], **body)
    assert after["usage"]["prompt_tokens"] == len("\nand\n")  # the continued answer stood in the session


def test_a_chat_session_is_not_written_to_by_completions_and_one_answer_at_a_time(client):
    sid = client.post("/v1/sessions", json={}).json()["id"]
    chat(client, messages=[{"role": "user", "content": "the"}], session=sid, max_tokens=5)
    refused = client.post("/v1/completions", json={"session": sid, "prompt": "x"})
    assert refused.status_code == 409 and refused.json()["error"]["param"] == "session"
    two = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "session": sid,
                                                    "n": 2})  # fmt: skip
    assert two.status_code == 400 and two.json()["error"]["param"] == "n"


def test_characters_the_model_never_saw_are_named(client):
    said = chat(client, messages=[{"role": "user", "content": "the king \u263a is <dead>"}], max_tokens=5)
    assert said["unknown_characters"] == sorted("\u263a<>")
    body = {"messages": [{"role": "user", "content": "\u263a"}], "stream": True, "max_tokens": 5}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert events[0]["unknown_characters"] == ["\u263a"] and all("unknown_characters" not in e for e in events[1:])


def test_n_answers_without_a_session_each_by_its_own_seed(client):
    choices = chat(client, messages=[{"role": "user", "content": "the"}], n=3, seed=2, max_tokens=30)["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2] and len({c["message"]["content"] for c in choices}) > 1


def test_a_line_model_chats_a_line_at_a_time(names_ckpt):  # noqa: F811
    with TestClient(create_app(chargen.load(names_ckpt, "cpu"))) as client:
        assert client.get("/v1/models").json()["data"][0]["chat"]["stop"] == ["\n"]
        answer = chat(client, messages=[{"role": "user", "content": "the king"}], max_tokens=200, seed=1)
    assert "\n" not in answer["choices"][0]["message"]["content"]
    assert answer["usage"]["prompt_tokens"] == len("\nthe king\n")  # after a line boundary


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": "hi"}, 400, "messages"),
        ({"messages": ["hi"]}, 400, "messages[0]"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, 400, "messages[1].role"),
        ({"messages": [{"role": "system", "content": "a"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "a" * 10_000_000}]}, 413, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "a"}], "n": 17}, 400, "n"),
        ({"messages": [{"role": "user", "content": "a"}], "temperature": -1}, 400, "temperature"),
        ({"messages": [{"role": "user", "content": "a"}], "stream": "yes"}, 400, "stream"),
        ({"messages": [{"role": "user", "content": "a"}], "user_prefix": 3}, 400, "user_prefix"),
        ({"messages": [{"role": "user", "content": "a"}], "tools": [{}]}, 400, "tools"),
        ({"messages": [{"role": "user", "content": "a"}], "session": "sess-nope"}, 404, "session"),
    ],
)
def test_bad_chat_requests_get_a_4xx_naming_the_field(client, body, status, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in error["message"]
    assert chat(client, messages=[{"role": "user", "content": "a"}], max_tokens=5)["choices"][0]["message"]["content"]


def test_the_server_prefixes_are_the_default_and_a_request_may_set_its_own(model):
    config = ServeConfig(user_prefix="ROMEO:\n", bot_prefix="JULIET:\n")
    with TestClient(create_app(model, config)) as client:
        served = chat(client, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        own = chat(client, messages=[{"role": "user", "content": "hi"}], max_tokens=5, user_prefix="", bot_prefix="")
    assert served["usage"]["prompt_tokens"] == len("ROMEO:\nhi\nJULIET:\n") and own["usage"]["prompt_tokens"] == 3


def test_a_client_that_leaves_a_chat_leaves_the_session_as_it_was_read(tiny_ckpt):
    with serving(tiny_ckpt) as url:
        client = httpx.Client(base_url=url, timeout=30)
        sid = client.post("/v1/sessions", json={}).json()["id"]
        body = {"session": sid, "messages": [{"role": "user", "content": "the"}], "max_tokens": 20_000, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            next(response.iter_lines())
        for _ in range(100):
            state = client.get(f"/v1/sessions/{sid}").json()
            if not state["busy"]:
                break
            time.sleep(0.05)
    assert state["text"] == "the\n"  # the question was read; the answer its client left was not kept
