"""chargen serve under load, on this machine only: concurrent streaming clients, first-character latency, memory.

    python benchmarks/serve.py                  # the bundled model (2x384 LSTM)
    python benchmarks/serve.py -c CKPT
    python benchmarks/serve.py --chat           # the chat figures only
    python benchmarks/serve.py --hostile        # one client's request beside a hostile client's

Starts `chargen serve` on a free port of 127.0.0.1 and measures, with streaming clients:
1, 8 and 32 clients at once, each writing 1,000 characters (aggregate characters per second,
the time to each client's first character, errors); then 1,000 short requests, 16 at a
time, with the server's resident memory read from /proc before, during and after. Then chat over
sessions (/v1/chat/completions): a 50-turn chat, each turn 100 characters, its time per turn
(and turn 50 again without the session, re-reading the whole history); and 8 chats at once,
5 turns each, the time to each answer's first character. With --hostile: a 20-character request's
time alone, then beside 4 streams of 20,000 characters that carry the most stop matching a request
may ask for (4 stop strings of 256 characters that never match), beside the same 4 streams with no
stop strings, and after a 20,000-character non-streamed request whose client left after a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client: httpx.AsyncClient, url: str, chars: int, seed: int) -> tuple[float, float, int]:
    """(seconds to the first character, seconds in all, characters) of one streamed completion."""
    body = {"prompt": "ROMEO:", "max_tokens": chars, "temperature": 0.8, "seed": seed, "stream": True}
    start, first, got = time.perf_counter(), None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text and first is None:
                first = time.perf_counter() - start
            got += len(text)
    return first or float("nan"), time.perf_counter() - start, got


async def concurrent(url: str, clients: int, chars: int) -> dict:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, url, chars, i) for i in range(clients)), return_exceptions=True)
        wall = time.perf_counter() - start
    ok = [r for r in results if not isinstance(r, BaseException)]
    firsts = sorted(r[0] for r in ok)
    return {
        "clients": clients,
        "errors": len(results) - len(ok),
        "complete": sum(r[2] == chars for r in ok),
        "chars_per_s": sum(r[2] for r in ok) / wall,
        "first_p50_ms": 1000 * statistics.median(firsts),
        "first_p95_ms": 1000 * firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))],
    }


async def many(url: str, pid: int, requests: int, at_once: int) -> list[tuple[int, float]]:
    """RSS (MB) after every 100 of `requests` short completions, `at_once` at a time."""
    marks, done = [(0, rss_mb(pid))], 0
    async with httpx.AsyncClient(timeout=300) as client:
        while done < requests:
            await asyncio.gather(*(one(client, url, 100, done + i) for i in range(at_once)))
            done += at_once
            if done % 96 == 0 or done >= requests:  # 16 x 6
                marks.append((done, rss_mb(pid)))
    return marks


CHAT = {"max_tokens": 100, "temperature": 0.8, "stop": ["\x00"], "stream": True}  # 100 characters every turn


async def turn(client: httpx.AsyncClient, url: str, messages: list, **body) -> tuple[float, float, str]:
    """(seconds to the first character, seconds in all, the answer) of one streamed chat turn."""
    start, first, answer = time.perf_counter(), None, ""
    async with client.stream("POST", url + "/v1/chat/completions", json={**CHAT, "messages": messages, **body}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                piece = json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                if piece and first is None:
                    first = time.perf_counter() - start
                answer += piece
    return first or float("nan"), time.perf_counter() - start, answer


async def chat(client: httpx.AsyncClient, url: str, turns: int, seed: int) -> tuple[list[tuple[float, float]], list]:
    """A chat of `turns` turns in a session of its own: (first character, whole turn) seconds per turn, and the
    messages."""
    session = (await client.post(url + "/v1/sessions", json={})).json()["id"]
    messages, times = [], []
    for k in range(turns):
        messages.append({"role": "user", "content": f"ROMEO:\nWhat say you to this, my {k}th question?"})
        first, whole, answer = await turn(client, url, messages, session=session, seed=seed)
        messages.append({"role": "assistant", "content": answer})
        times.append((first, whole))
    return times, messages


async def chats(url: str) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        times, messages = await chat(client, url, 50, 1)
        again = await turn(client, url, messages[:-1], seed=1)  # turn 50 without the session: the history re-read
    ms = [1000 * whole for _, whole in times]
    print(f"\n50-turn chat over a session, 100 characters a turn: turn 1 {ms[0]:.0f} ms, turn 5 {ms[4]:.0f} ms, "
          f"turn 25 {ms[24]:.0f} ms, turn 50 {ms[49]:.0f} ms (turn 50 / turn 5: {ms[49] / ms[4]:.2f}x; "
          f"median of turns 5-50 {statistics.median(ms[4:]):.0f} ms); turn 50 without the session, "
          f"reading the {sum(len(m['content']) for m in messages[:-1]):,} characters of history: "
          f"{1000 * again[1]:.0f} ms")  # fmt: skip
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=8)) as client:
        results = await asyncio.gather(*(chat(client, url, 5, i) for i in range(8)))
    firsts = sorted(1000 * first for times, _ in results for first, _ in times)
    p95 = firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))]
    print(f"8 chats at once, 5 turns each: first character p50 {statistics.median(firsts):.0f} ms, p95 {p95:.0f} ms")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


NEVER = ["\x01" * 255 + c for c in "abcd"]  # the longest stop strings a request may give, never written


async def small(client: httpx.AsyncClient, url: str) -> float:
    """Milliseconds of one non-streamed 20-character completion: what a well-behaved client waits."""
    start = time.perf_counter()
    body = {"prompt": "ROMEO:", "max_tokens": 20, "temperature": 0.8, "seed": 1}
    (await client.post(url + "/v1/completions", json=body)).raise_for_status()
    return 1000 * (time.perf_counter() - start)


async def hostile(url: str) -> None:
    async def victim(client) -> float:
        return statistics.median([await small(client, url) for _ in range(10)])

    async def long(client, stream: bool, **body) -> None:
        body = {"prompt": "ROMEO:", "max_tokens": 20_000, "temperature": 0.8, "stream": stream, **body}
        async with client.stream("POST", url + "/v1/completions", json=body) as response:
            async for _ in response.aiter_bytes():
                pass

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=16)) as client:
        rows = [("alone", await victim(client))]
        for label, extra in (
            ("4 streams with 4 stop strings of 256 characters", {"stop": NEVER}),
            ("4 streams, no stop", {}),
        ):
            attack = [asyncio.create_task(long(client, True, **extra)) for _ in range(4)]
            await asyncio.sleep(1)
            rows.append((f"beside {label}", await victim(client)))
            for task in attack:
                task.cancel()
            await asyncio.gather(*attack, return_exceptions=True)
        left = asyncio.create_task(long(client, False, stop=NEVER))
        await asyncio.sleep(1)
        left.cancel()
        await asyncio.gather(left, return_exceptions=True)
        await asyncio.sleep(0.5)
        rows.append(("after a non-streamed 20,000-character request whose client left", await victim(client)))
        rows.append(("alone again", await victim(client)))
    print("| a 20-character request (median of 10) | ms |\n|---|---|")
    for label, ms in rows:
        print(f"| {label} | {ms:.0f} |")
    print(f"load average over the last minute: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--checkpoint", default="shakespeare")
    ap.add_argument("--chat", action="store_true", help="measure the chat figures only")
    ap.add_argument("--hostile", action="store_true", help="measure one client beside a hostile one only")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "chargen", "serve", "-c", args.checkpoint, "--port", str(port), "--device", "cpu"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        asyncio.run(concurrent(url, 2, 50))  # warm up
        if args.chat:
            asyncio.run(chats(url))
            return
        if args.hostile:
            asyncio.run(hostile(url))
            return
        print("| clients | complete | errors | aggregate chars/s | first char p50 | first char p95 |")
        print("|---|---|---|---|---|---|")
        rows = [asyncio.run(concurrent(url, n, 1000)) for n in (1, 8, 32)]
        for r in rows:
            print(
                f"| {r['clients']} | {r['complete']} | {r['errors']} | {r['chars_per_s']:,.0f} "
                f"| {r['first_p50_ms']:.0f} ms | {r['first_p95_ms']:.0f} ms |"
            )
        print(f"\n32 clients: {rows[2]['chars_per_s'] / rows[0]['chars_per_s']:.1f}x the throughput of one")
        marks = asyncio.run(many(url, server.pid, 1008, 16))
        print("server RSS after N requests: " + ", ".join(f"{n}: {mb:.0f} MB" for n, mb in marks))
        asyncio.run(chats(url))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
