#!/usr/bin/env python3
"""Load generator for the live event stream (issue 15), driven by bench/events.sh.

Python's standard library only (asyncio streams speaking HTTP/1.1 by hand):
a stream is one socket and a line reader, so one process holds thousands of
them in a few tens of MiB, and nothing has to be installed on the machine.

Modes (each prints one JSON object on stdout):
  idle     --port P --tokens FILE --skip K --count N --hold S
           open N streams (tokens K.. of FILE, one per user), wait for every
           `stream.ready`, print {"ready": n} to stderr, hold S seconds
  latency  --port P (streams) --post-port Q (posts) --gp TOKEN --ph TOKEN
           --threads FILE --ph-streams M --rate R --duration S
           M streams of the pharmacist; the GP posts R messages/s round-robin
           over the threads; per `message.created` received:
           latency = receipt time - the event's `at` (stamped in the writing
           transaction, before its commit: an upper bound of commit->receipt)
  loss     --ports P[,P2] --ph TOKEN --gp TOKEN --threads FILE --rate R
           --duration S --control FIFO
           one pharmacist stream that reconnects with Last-Event-ID whenever it
           ends (and on purpose every 2 s), alternating between the ports; the
           GP posts meanwhile (errors during restarts are counted, not fatal);
           prints every event id received (duplicates kept) for the caller to
           compare with the rows in the database
  basis    --port P --gp TOKEN --ph TOKEN --patient ID --thread ID --rate R
           --duration S
           the GP posts in the patient's thread; halfway the GP removes the
           pharmacist from the team; counts the events about that patient the
           pharmacist's stream receives after the removal's answer
"""

import argparse
import asyncio
import json
import sys
import time

HOST = "127.0.0.1"
BODY = json.dumps(
    {"body": "Patient seen at the counter, reports pain 5/10, took the evening dose at 19:00."}
).encode()


def parse_at(text):
    # 2026-12-01T14:00:00.123456Z
    from datetime import datetime, timezone

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


async def open_stream(port, token, last_id=None):
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 16)
    head = f"GET /api/v1/events HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    if last_id is not None:
        head += f"Last-Event-ID: {last_id}\r\n"
    writer.write((head + "\r\n").encode())
    await writer.drain()
    status = await reader.readline()
    code = int(status.split()[1]) if status else 0
    chunked = False
    while True:
        line = await reader.readline()
        if not line or line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
            chunked = True
    return code, reader, writer, chunked


async def frames(reader, chunked):
    """Yields (event, id, data) per SSE frame; ends when the stream does."""
    buf = b""
    event = ident = None
    data = []
    while True:
        if chunked:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size + 2)
            buf += chunk[:-2]
        else:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode()
            if line == "":
                if data or event:
                    yield event, ident, "\n".join(data)
                event = ident = None
                data = []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)


class Poster:
    """Keep-alive HTTP connections posting messages as the GP at a fixed rate."""

    def __init__(self, port, token, threads, conns=8):
        self.port, self.token, self.threads, self.conns = port, token, threads, conns
        self.ok = self.failed = 0
        self.i = 0

    async def _conn(self):
        return await asyncio.open_connection(HOST, self.port)

    async def post_once(self, rw, path, method="POST", body=BODY):
        reader, writer = rw
        writer.write(
            (
                f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        status = await reader.readline()
        if not status:
            raise ConnectionError("closed")
        code = int(status.split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        payload = await reader.readexactly(length) if length else b""
        return code, payload

    async def run(self, rate, duration):
        queue = asyncio.Queue(maxsize=self.conns * 4)

        async def worker():
            rw = None
            while True:
                item = await queue.get()
                if item is None:
                    break
                try:
                    if rw is None:
                        rw = await self._conn()
                    code, _ = await self.post_once(rw, item)
                    if code == 201:
                        self.ok += 1
                    else:
                        self.failed += 1
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                    self.failed += 1
                    if rw is not None:
                        rw[1].close()
                    rw = None
                    await asyncio.sleep(0.05)

        workers = [asyncio.create_task(worker()) for _ in range(self.conns)]
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration:
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            thread = self.threads[self.i % len(self.threads)]
            self.i += 1
            try:
                queue.put_nowait(f"/api/v1/threads/{thread}/messages")
            except asyncio.QueueFull:
                self.failed += 1  # the server is not keeping up: counted, not queued
            n += 1
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)


async def idle(a):
    tokens = open(a.tokens).read().split()[a.skip : a.skip + a.count]
    held = []
    ready = 0
    failed = 0
    codes = {}

    async def one(token):
        nonlocal ready, failed
        for attempt in range(20):
            try:
                code, reader, writer, chunked = await open_stream(a.port, token)
                if code != 200:
                    writer.close()
                    failed += 1
                    codes[code] = codes.get(code, 0) + 1
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                async for event, _, _ in frames(reader, chunked):
                    if event == "stream.ready":
                        ready += 1
                        held.append((reader, writer, chunked))
                        return
                return
            except OSError:
                failed += 1
                await asyncio.sleep(0.2 * (attempt + 1))

    sem = asyncio.Semaphore(64)

    async def gated(token):
        async with sem:
            await one(token)

    await asyncio.gather(*(gated(t) for t in tokens))
    print(json.dumps({"ready": ready, "retries": failed, "codes": codes}), file=sys.stderr, flush=True)
    await asyncio.sleep(a.hold)
    # Still open at the end? A closed stream reads EOF at once.
    alive = 0
    for reader, writer, _ in held:
        if not reader.at_eof():
            alive += 1
        writer.close()
    print(json.dumps({"mode": "idle", "streams": len(tokens), "ready": ready, "alive_at_end": alive, "retries": failed}))


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


async def latency(a):
    threads = open(a.threads).read().split()
    lat = []
    received = 0
    ready = asyncio.Event()
    opened = 0

    async def stream():
        nonlocal received, opened
        code, reader, writer, chunked = await open_stream(a.port, a.ph)
        if code != 200:
            raise SystemExit(f"pharmacist stream: HTTP {code}")
        async for event, _, data in frames(reader, chunked):
            now = time.time()
            if event == "stream.ready":
                opened += 1
                if opened == a.ph_streams:
                    ready.set()
            elif event == "message.created":
                received += 1
                lat.append(now - parse_at(json.loads(data)["at"]))

    tasks = [asyncio.create_task(stream()) for _ in range(a.ph_streams)]
    await asyncio.wait_for(ready.wait(), 60)
    poster = Poster(a.post_port, a.gp, threads)
    await poster.run(a.rate, a.duration)
    await asyncio.sleep(2)
    for t in tasks:
        t.cancel()
    ms = [x * 1000 for x in lat]
    print(
        json.dumps(
            {
                "mode": "latency",
                "posted_ok": poster.ok,
                "post_failed": poster.failed,
                "pharmacist_streams": a.ph_streams,
                "events_expected": poster.ok * a.ph_streams,
                "events_received": received,
                "p50_ms": round(percentile(ms, 50), 2) if ms else None,
                "p99_ms": round(percentile(ms, 99), 2) if ms else None,
                "max_ms": round(max(ms), 2) if ms else None,
                "rate": a.rate,
                "duration_s": a.duration,
            }
        )
    )


async def loss(a):
    threads = open(a.threads).read().split()
    ports = [int(p) for p in a.ports.split(",")]
    ids = []
    last = None
    reconnects = 0
    resets = 0
    done = False
    last_rx = time.monotonic()

    async def stream():
        nonlocal last, reconnects, resets, last_rx
        k = 0
        while not done:
            port = ports[k % len(ports)]
            k += 1
            try:
                code, reader, writer, chunked = await open_stream(port, a.ph, last)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            if code != 200:
                writer.close()
                await asyncio.sleep(0.1)
                continue
            reconnects += 1
            started = time.monotonic()
            try:
                async for event, ident, _ in frames(reader, chunked):
                    if event == "stream.reset":
                        resets += 1
                    if event == "stream.ready" and last is None:
                        last = int(ident)
                    elif event == "message.created":
                        ids.append(int(ident))
                        last = int(ident)
                        last_rx = time.monotonic()
                    if time.monotonic() - started > 2:
                        break
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            writer.close()

    task = asyncio.create_task(stream())
    while last is None:
        await asyncio.sleep(0.05)
    first = last
    poster = Poster(int(a.post_port), a.gp, threads, conns=4)
    await poster.run(a.rate, a.duration)
    # Until the stream has been quiet for 5 s (it has caught up), at most 120 s.
    stop_at = time.monotonic() + 120
    while time.monotonic() - last_rx < 5 and time.monotonic() < stop_at:
        await asyncio.sleep(0.5)
    done = True
    await asyncio.sleep(2.5)
    task.cancel()
    print(
        json.dumps(
            {
                "mode": "loss",
                "after": first,
                "posted_ok": poster.ok,
                "post_failed": poster.failed,
                "received": len(ids),
                "distinct": len(set(ids)),
                "connections": reconnects,
                "resets": resets,
                "ids": ids,
            }
        )
    )


async def basis(a):
    poster = Poster(a.port, a.gp, [a.thread], conns=4)
    about = []
    removed_at = None

    async def stream():
        code, reader, writer, chunked = await open_stream(a.port, a.ph)
        async for event, _, data in frames(reader, chunked):
            if event == "message.created":
                d = json.loads(data)
                if d.get("patient_id") == a.patient:
                    about.append(time.time())

    task = asyncio.create_task(stream())
    await asyncio.sleep(0.5)

    async def remove():
        nonlocal removed_at
        await asyncio.sleep(a.duration / 2)
        rw = await asyncio.open_connection(HOST, a.port)
        code, _ = await poster.post_once(
            rw, f"/api/v1/patients/{a.patient}/care-team/{a.ph_id}", method="DELETE", body=b""
        )
        removed_at = time.time()
        if code not in (200, 204):
            raise SystemExit(f"removal: HTTP {code}")

    await asyncio.gather(poster.run(a.rate, a.duration), remove())
    await asyncio.sleep(2)
    task.cancel()
    after = [t for t in about if t > removed_at]
    print(
        json.dumps(
            {
                "mode": "basis",
                "posted_ok": poster.ok,
                "events_before_removal": len(about) - len(after),
                "events_after_removal": len(after),
            }
        )
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["idle", "latency", "loss", "basis"])
    p.add_argument("--port", type=int)
    p.add_argument("--post-port", type=int)
    p.add_argument("--ports")
    p.add_argument("--tokens")
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--hold", type=float, default=10)
    p.add_argument("--gp")
    p.add_argument("--ph")
    p.add_argument("--ph-id")
    p.add_argument("--threads")
    p.add_argument("--thread")
    p.add_argument("--patient")
    p.add_argument("--ph-streams", type=int, default=5)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--duration", type=float, default=30)
    a = p.parse_args()
    asyncio.run({"idle": idle, "latency": latency, "loss": loss, "basis": basis}[a.mode](a))


if __name__ == "__main__":
    main()
