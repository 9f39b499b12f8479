#!/usr/bin/env python3
"""Login flood (issue 12, finding 4): failed sign-ins from many loopback
addresses against the release build; the server's peak memory and the
status of every answer, while a legitimate user signs in.

    python3 bench/login_flood.py [--mode distinct|victim] [--requests 500]
        [--addresses 100] [--concurrency 100] [--backend sqlite|postgres]
        [--bin target/release/relais]

- Starts a fresh server (SQLite file under bench/out/flood/, or a throwaway
  PostgreSQL database relais_bench_flood on 127.0.0.1:5432) with
  `auth.ip_requests_per_minute` left at its default (60) and creates the
  legitimate account with `relais create-admin`.
- The legitimate user signs in once from 127.0.0.1 (their usual address).
- The flood: `--concurrency` connections, connection i bound to source
  address 127.0.0.(2 + i % addresses), sending `--requests` wrong-password
  sign-ins in all (keep-alive, one at a time per connection).
  `distinct`: every attempt names another (unknown) account, so every one
  needs a hash (the memory worst case); `victim`: every attempt names the
  legitimate account (the lock-out worst case).
- During the flood the legitimate user signs in from 127.0.0.1, retrying
  on 503 after `Retry-After` as a client should.
- Records VmRSS before, VmHWM (peak resident memory) after, the histogram
  of statuses, and the legitimate sign-in's outcome. Prints one JSON line.

Only loopback is used. No third-party Python packages.
"""

import argparse
import asyncio
import collections
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "the legitimate user's long password"
EMAIL = "clinician@relais.bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    return None


async def request(reader, writer, port, body):
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /api/v1/auth/login HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{port}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    data = await reader.readexactly(length) if length else b""
    return status, headers, data


async def connection(i, args, port, counter, statuses, ok_event):
    src = f"127.0.0.{2 + i % args.addresses}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
    try:
        while True:
            n = counter[0]
            if n >= args.requests:
                return
            counter[0] += 1
            email = EMAIL if args.mode == "victim" else f"nobody-{n}@relais.bench"
            body = {"email": email, "password": f"wrong guess {secrets.token_hex(4)}"}
            try:
                status, _, _ = await request(reader, writer, port, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                statuses["connection error"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(src, 0)
                )
                continue
            statuses[status] += 1
    finally:
        writer.close()


async def legitimate(port, started, result):
    """Signs in from 127.0.0.1 once the flood is under way, retrying on 503."""
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    tries = []
    for _ in range(30):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
        status, headers, _ = await request(reader, writer, port, {"email": EMAIL, "password": PASSWORD})
        writer.close()
        tries.append(status)
        if status != 503:
            break
        await asyncio.sleep(float(headers.get("retry-after", "1")))
    result.update(
        statuses=tries,
        ok=tries[-1] == 200,
        seconds=round(time.monotonic() - t0, 3),
        started_after_s=round(t0 - started, 3),
        answered_after_s=round(time.monotonic() - started, 3),
    )


async def flood(args, port, pid):
    counter = [0]
    statuses = collections.Counter()
    legit = {}
    started = time.monotonic()
    peak_sample = [0.0]

    async def sample():
        while True:
            rss = proc_status(pid, "VmRSS")
            peak_sample[0] = max(peak_sample[0], rss or 0)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    tasks = [
        asyncio.create_task(connection(i, args, port, counter, statuses, None))
        for i in range(args.concurrency)
    ]
    legit_task = asyncio.create_task(legitimate(port, started, legit))
    await asyncio.gather(*tasks)
    flood_s = time.monotonic() - started
    await legit_task
    # Sent while the flood was running (its answer may come last, FIFO).
    legit["during_flood"] = legit["started_after_s"] < flood_s
    sampler.cancel()
    return statuses, legit, flood_s, peak_sample[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["distinct", "victim"], default="distinct")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--addresses", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/relais"))
    p.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    args = p.parse_args()

    out = os.path.join(ROOT, "bench/out/flood")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    port = free_port()
    env = dict(os.environ)
    if args.backend == "sqlite":
        db_url = f"sqlite://{out}/relais.db"
    else:
        subprocess.run(["psql", "-q", f"{args.pg}/postgres", "-c", "DROP DATABASE IF EXISTS relais_bench_flood",
                        "-c", "CREATE DATABASE relais_bench_flood"], check=True)
        db_url = f"{args.pg}/relais_bench_flood?sslmode=disable"
    env.update(
        RELAIS__DATABASE__URL=db_url,
        RELAIS__SERVER__BIND=f"127.0.0.1:{port}",
        RELAIS__SERVER__PUBLIC_URL=f"http://127.0.0.1:{port}",
        RELAIS__SERVER__DATA_DIR=out,
        RELAIS__AUTH__JWT_SECRET="bench-secret-" + secrets.token_hex(16),
        RELAIS__EMAIL__TRANSPORT="log",
        RUST_LOG="warn",
    )
    subprocess.run([args.bin, "create-admin", "--email", EMAIL, "--full-name", "Bench Clinician",
                    "--password-stdin"], input=PASSWORD.encode(), env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log = open(os.path.join(out, "server.log"), "w")
    server = subprocess.Popen([args.bin, "serve"], env=env, stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        # The clinician's usual sign-in, from their usual address.
        async def warm():
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0))
            status, _, _ = await request(reader, writer, port, {"email": EMAIL, "password": PASSWORD})
            writer.close()
            return status
        warm_status = asyncio.run(warm())
        rss_before = proc_status(server.pid, "VmRSS")
        statuses, legit, flood_s, sampled = asyncio.run(flood(args, port, server.pid))
        peak = proc_status(server.pid, "VmHWM")
        rss_after = proc_status(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait()
        if args.backend == "postgres":
            subprocess.run(["psql", "-q", f"{args.pg}/postgres", "-c",
                            "DROP DATABASE IF EXISTS relais_bench_flood"], check=False)
    answered = sum(v for k, v in statuses.items() if k in (401, 429, 503))
    result = {
        "mode": args.mode,
        "backend": args.backend,
        "requests": args.requests,
        "addresses": args.addresses,
        "concurrency": args.concurrency,
        "flood_s": round(flood_s, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "all_401_429_503": answered == args.requests,
        "warm_login": warm_status,
        "legitimate_login": legit,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(peak, 1),
        "rss_after_mib": round(rss_after, 1),
        "target_met": answered == args.requests and peak <= 96 and legit.get("ok", False),
    }
    print(json.dumps(result))
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
