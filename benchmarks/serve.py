"""chargen serve under load, on this machine only: concurrent streaming clients, first-character latency, memory.

    python benchmarks/serve.py                  # the bundled model (2x384 LSTM)
    python benchmarks/serve.py -c CKPT

Starts `chargen serve` on a free port of 127.0.0.1 and measures, with streaming clients:
1, 8 and 32 clients at once, each writing 1,000 characters (aggregate characters per second,
the time to each client's first character, errors); then 1,000 short requests, 16 at a
time, with the server's resident memory read from /proc before, during and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--checkpoint", default="shakespeare")
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
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
