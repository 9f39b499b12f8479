#!/usr/bin/env python3
"""Where a process's resident memory is, from /proc/PID/smaps (KiB).

    python3 bench/smaps_split.py PID        # one JSON object

Groups: the executable's own pages (file-backed: code, read-only data),
other files (shared libraries), the main heap ([heap], glibc's brk arena),
anonymous mappings of 8 MiB + 4 KiB or less that look like thread stacks
(8 MiB, the default), glibc's other arenas (64 MiB reservations, partly
committed), and the rest. Rss and Anonymous are summed per group.
"""
import json
import os
import re
import sys

pid = sys.argv[1]
exe = os.readlink(f"/proc/{pid}/exe")
groups = {}
head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def add(group, rss, anon):
    g = groups.setdefault(group, {"rss_kib": 0, "anon_kib": 0, "mappings": 0})
    g["rss_kib"] += rss
    g["anon_kib"] += anon
    g["mappings"] += 1


current = None
with open(f"/proc/{pid}/smaps") as f:
    for line in f:
        m = head.match(line)
        if m:
            if current:
                add(*current)
            start, end, name = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
            size_kib = (end - start) // 1024
            if name == exe or name.startswith(exe + " "):
                group = "executable"
            elif name.startswith("/"):
                group = "other files"
            elif name == "[heap]":
                group = "main heap ([heap])"
            elif name == "[stack]":
                group = "main thread stack"
            elif name.startswith("["):
                group = "kernel ([vdso] …)"
            elif size_kib in (8192, 8196, 2048):
                group = "thread stacks"
            elif size_kib >= 32768:
                group = "glibc arenas (anonymous ≥ 32 MiB)"
            else:
                group = "other anonymous"
            current = [group, 0, 0]
        elif current and line.startswith("Rss:"):
            current[1] = int(line.split()[1])
        elif current and line.startswith("Anonymous:"):
            current[2] = int(line.split()[1])
if current:
    add(*current)
rollup = {}
with open(f"/proc/{pid}/smaps_rollup") as f:
    for line in f:
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            rollup[parts[0].rstrip(":")] = int(parts[1])
print(json.dumps({
    "rss_kib": rollup.get("Rss"),
    "anonymous_kib": rollup.get("Anonymous"),
    "file_backed_kib": rollup.get("Rss", 0) - rollup.get("Anonymous", 0),
    "groups": groups,
}))
