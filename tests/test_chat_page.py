"""The page's chat in Debian's chromium: it streams, retries, undoes, survives a reload, says when the server stops,
fits a phone and follows a dark system scheme; screenshots are kept in pytest's temporary folder."""

from __future__ import annotations

import json

import httpx
import pytest

from .test_serve import pixels, start_server

LINES = ["the king is dead", "long live the queen", "and all her men"]


@pytest.fixture(scope="module")
def server(tiny_ckpt):
    proc, url = start_server(tiny_ckpt)
    yield url
    proc.kill()
    proc.wait()


def opened(browser, url: str, **context):
    """A tab at `url` in a context of its own (`context`: Playwright's options), on the chat, recording errors."""
    tab = browser.new_context(**context).new_page()
    seen = []
    tab.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: seen.append(str(e)))
    tab.goto(url)
    tab.click("#tab-chat")
    return tab, seen


def send(tab, line: str, wait: bool = True) -> None:
    tab.fill("#chat-input", line)
    tab.press("#chat-input", "Enter")
    if wait:
        tab.wait_for_selector("#chat-send:not([disabled])")  # the page's policy allows no eval: wait by selectors


def answers(tab) -> list[str]:
    return [t.text_content() for t in tab.query_selector_all("#chat-log .msg.bot .text")]


def stored(tab) -> dict:
    return json.loads(tab.evaluate("localStorage.getItem('chargen-chat')"))


def test_a_chat_streams_retries_undoes_and_survives_a_reload(server, browser, tmp_path):
    tab, seen = opened(browser, server + "/")
    kinds = []
    tab.on("response", lambda r: kinds.append(r.headers["content-type"]) if r.url.endswith("/chat/completions") else 0)
    tab.fill("#chat-seed", "3")
    tab.fill("#chat-max_tokens", "60")
    for line in LINES:
        send(tab, line)
    said = answers(tab)
    assert len(said) == 3 and all(said) and len(kinds) == 3 and all(k.startswith("text/event-stream") for k in kinds)
    session = stored(tab)["session"]
    text = httpx.get(f"{server}/v1/sessions/{session}").json()["text"]
    assert all(line in text for line in LINES) and all(a in text for a in said)  # one session carried the chat
    assert "error" not in tab.get_attribute("#chat-status", "class") and "60 characters" in tab.text_content(
        "#chat-status"
    )
    tab.screenshot(path=str(tmp_path / "chat.png"))

    tab.click("#chat-retry")
    tab.wait_for_selector("#chat-send:not([disabled])")
    again = answers(tab)
    assert again[:2] == said[:2] and again[2] and again[2] != said[2]  # a sibling answer, drawn anew
    assert "answer 2 of 2" in tab.text_content("#chat-log .pager")
    tab.click("#chat-log .pager .prev")
    assert answers(tab)[2] == said[2]
    tab.click("#chat-more")
    tab.wait_for_selector("#chat-send:not([disabled])")
    longer = answers(tab)[2]
    assert longer.startswith(said[2]) and len(longer) == len(said[2]) + 60  # continued where it stopped

    tab.click("#chat-undo")
    assert answers(tab) == said[:2] and tab.input_value("#chat-input") == LINES[2]
    assert len(tab.query_selector_all("#chat-log .msg")) == 4

    tab.reload()
    tab.wait_for_selector("#chat-log .msg")
    assert tab.is_visible("#chat-log") and answers(tab) == said[:2]  # the conversation and its tab came back
    send(tab, "long live the king")
    assert stored(tab)["session"] == session and len(answers(tab)) == 3
    assert answers(tab)[2] in httpx.get(f"{server}/v1/sessions/{session}").json()["text"]  # it went on there
    assert seen == []


def test_the_server_stopped_mid_answer_shows_an_error(tiny_ckpt, browser, tmp_path):
    proc, url = start_server(tiny_ckpt)
    try:
        body = {"messages": [{"role": "user", "content": "the king"}], "temperature": 0, "max_tokens": 4000}
        precondition = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
        assert precondition["choices"][0]["finish_reason"] == "length"  # greedy, it writes on: time to stop it
        tab, seen = opened(browser, url + "/")
        tab.fill("#chat-temperature", "0")
        tab.fill("#chat-max_tokens", "20000")
        send(tab, "the king", wait=False)
        tab.wait_for_selector("#chat-log .msg.bot .text:not(:empty)")
        tab.click("#chat-stop")  # Stop keeps what was written, as no error
        tab.wait_for_selector("#chat-send:not([disabled])")
        assert tab.text_content("#chat-status").startswith("stopped after") and not tab.query_selector(".msg.broken")
        assert answers(tab)[0]
        send(tab, "the queen", wait=False)
        tab.wait_for_selector("#chat-log .msg.bot:nth-child(4) .text:not(:empty)")
        proc.kill()
        proc.wait()
        tab.wait_for_selector("#chat-status.error", timeout=15_000)
        assert "server stopped answering" in tab.text_content("#chat-status")
        assert tab.is_visible("#chat-log .msg.bot.broken .note") and tab.is_enabled("#chat-send")
        tab.wait_for_selector("#model.error", timeout=15_000)  # the page's check on the server says so too
        tab.screenshot(path=str(tmp_path / "stopped.png"))
        assert "stopped answering" in tab.text_content("#model")
    finally:
        proc.kill()
        proc.wait()
    assert [s for s in seen if "ERR_CONNECTION_REFUSED" not in s and "Failed to load" not in s] == []


def test_a_phone_has_no_sideways_scroll_and_the_scheme_follows_the_system(server, browser, tmp_path):
    counted = {}
    for scheme in ("light", "dark"):
        tab, seen = opened(browser, server + "/", viewport={"width": 360, "height": 740}, color_scheme=scheme)
        tab.fill("#chat-max_tokens", "200")
        send(tab, "<b>the king</b> " + "x" * 300)  # a long word must wrap, not widen the page
        assert tab.locator("#chat-log b").count() == 0 and "<b>the king</b>" in tab.text_content("#chat-log")
        assert tab.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        for view in ("write", "score"):
            tab.click(f"#tab-{view}")
            assert tab.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        tab.click("#tab-chat")
        assert tab.get_attribute("#tab-chat", "aria-selected") == "true" and tab.get_attribute("#chat", "role") == (
            "tabpanel"
        )
        counted[scheme] = pixels(browser, tab.screenshot(path=str(tmp_path / f"phone-{scheme}.png"), full_page=True))
        assert seen == []
    assert counted["dark"]["ink"] > counted["dark"]["all"] / 2 > counted["light"]["ink"]  # dark ground, or light


def test_the_inspect_tab_is_opened_before_its_request(server, browser):
    tab, seen = opened(browser, server + "/")
    tab.click("#tab-score")
    tab.fill("#score-text", "the queen and all her men shall ride at dawn")
    with tab.context.expect_page() as popup:
        tab.click("#inspect-go")
    inspect = popup.value
    inspect.wait_for_selector("#surprisal-summary:has-text('bits/char')")
    assert tab.text_content("#summary") == "the inspect page is open in a new tab" and seen == []
    tab.evaluate("localStorage.setItem('chargen-probe', 'the server page keeps this')")
    reach = "() => { try { return localStorage.getItem('chargen-probe') } catch (e) { return e.name } }"
    assert inspect.evaluate("origin") == "null" and inspect.evaluate(reach) == "SecurityError"  # sandboxed


@pytest.mark.parametrize(
    "events, says",
    [
        (['{"choices": [{"index": 0, "text": "the", "finish_reason": null}]}'], "broke off"),
        (['{"choices": [{"index": 0, "text": "the", "finish_reason": "error"}]}', "[DONE]"], "finish_reason"),
    ],
)
def test_a_stream_that_breaks_off_or_ends_in_error_is_an_error(server, browser, events, says):
    """The engine's own faults are rare: the server's answer is played back here as the page would receive it."""
    tab, seen = opened(browser, server + "/")
    body = "".join(f"data: {e}\n\n" for e in events)
    tab.route("**/v1/completions", lambda route: route.fulfill(body=body, content_type="text/event-stream"))
    tab.click("#tab-write")
    tab.click("#go")
    tab.wait_for_selector("#go:not([disabled])")
    assert tab.get_attribute("#status", "class") == "error" and says in tab.text_content("#status")
    assert seen == []
