"""Latency of `GET /fhir/r4/Patient/{id}/$everything` (issue 16's target:
p50 <= 50 ms on SQLite for a patient with 1 000 messages and 50 plan versions).

Run by bench/fhir_everything.sh against a release server loaded with
`relais demo`; builds the patient through the REST API as the demo GP
(50 PUTs of the care plan, 1 000 messages on the patient's thread, a few
observations), then times $REQUESTS sequential reads (after $WARMUP
unmeasured ones) on one keep-alive connection, each following the `next`
links through every page, and prints p50/p90/p99 of the walk, the first
page's p50, and the size of the pages.

Usage: python3 bench/fhir_everything.py BASE_URL [REQUESTS] [WARMUP]
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse

BASE = sys.argv[1]
REQUESTS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
WARMUP = int(sys.argv[3]) if len(sys.argv) > 3 else 20
VERSIONS, MESSAGES = 50, 1000

url = urllib.parse.urlparse(BASE)
conn = http.client.HTTPConnection(url.hostname, url.port)


def call(method, path, token=None, body=None, headers=None):
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = "Bearer " + token
    h.update(headers or {})
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=h)
    res = conn.getresponse()
    data = res.read()
    return res.status, data


def ok(status, data, expected):
    if status != expected:
        sys.exit(f"unexpected {status}: {data[:300]!r}")
    return json.loads(data) if data else None


token = ok(*call("POST", "/api/v1/auth/login", body={"email": "gp@demo.relais.test", "password": "relais-demo-password"}), 200)["access_token"]
patient = ok(*call("POST", "/api/v1/patients", token, {
    "family_name": "Banc", "given_names": "Essai", "birth_date": "1970-01-01", "sex": "male"}), 201)
pid, thread = patient["id"], patient["thread_id"]
for v in range(VERSIONS):
    plan = {
        "status": "active",
        "omt": {"medication": "methadone", "daily_dose_mg": 40 + v, "doses_per_day": 1},
        "analgesics": [
            {"drug": "paracetamol", "dose_mg": 1000, "times_per_day": 4, "max_daily_mg": 4000,
             "start": "2026-11-24", "end": "2026-12-01"},
            {"drug": "ibuprofen", "dose_mg": 400, "times_per_day": 3, "max_daily_mg": 1200,
             "start": "2026-11-24", "end": "2026-11-28"},
        ],
        "pain_goal": "pain below 4/10",
        "review_date": "2026-12-01",
        "change_summary": f"version {v + 1}",
    }
    headers = {"if-match": f'"{v}"'} if v else {}
    ok(*call("PUT", f"/api/v1/patients/{pid}/care-plan", token, plan, headers), 200 if v else 201)
for m in range(MESSAGES):
    ok(*call("POST", f"/api/v1/threads/{thread}/messages", token, {"body": f"Message {m} du banc d'essai."}), 201)
for score in (3, 5, 7):
    ok(*call("POST", f"/api/v1/patients/{pid}/observations", token, {"pain_score": score}), 201)

def timed(path, auth, walk=False):
    """`REQUESTS` sequential GETs after `WARMUP`, each following the
    Bundle's `next` links to the end when `walk`: (times in ms, the pages
    of the last one)."""
    out, pages = [], []
    for i in range(WARMUP + REQUESTS):
        start = time.perf_counter()
        pages, url = [], path
        while url:
            status, data = call("GET", url, auth)
            if status != 200:
                sys.exit(f"{url} answered {status}")
            pages.append(data)
            url = None
            if walk:
                nxt = [l["url"] for l in json.loads(data).get("link", []) if l["relation"] == "next"]
                url = urllib.parse.urlparse(nxt[0]).path + "?" + urllib.parse.urlparse(nxt[0]).query if nxt else None
        elapsed = (time.perf_counter() - start) * 1000
        if i >= WARMUP:
            out.append(elapsed)
    return out, pages


path = f"/fhir/r4/Patient/{pid}/$everything"
# References in the same run, interleaved with the measure so that the
# host's load weighs on both: the liveness probe (no database, no audit) and
# the REST read of one page of 200 messages of the same thread (audited).
# $everything is paged (default and largest `_count` 1000 observation
# records and messages): one measure is the walk of every page (what a
# client does to get the whole record), the other the first page alone.
live_times, _ = timed("/api/v1/health/live", None)
times, pages = timed(path, token, walk=True)
first_times, _ = timed(path, token)
page_times, _ = timed(f"/api/v1/threads/{thread}/messages?limit=200", token)
live_times += timed("/api/v1/health/live", None)[0]
size = sum(len(p) for p in pages)
bundles = [json.loads(p) for p in pages]
entries = [e for b in bundles for e in b.get("entry", [])]
bundle = {"entry": entries}
kinds = {}
for e in entries:
    kinds[e["resource"]["resourceType"]] = kinds.get(e["resource"]["resourceType"], 0) + 1
assert kinds.get("Communication") == MESSAGES, kinds
assert len({(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries}) == len(entries), "a resource twice"
q = statistics.quantiles(times, n=100)
print(json.dumps({
    "requests": REQUESTS, "pages": len(pages), "p50_ms": round(statistics.median(times), 2), "p90_ms": round(q[89], 2),
    "p99_ms": round(q[98], 2),
    "first_page_p50_ms": round(statistics.median(first_times), 2),
    "live_p50_ms": round(statistics.median(live_times), 3),
    "rest_page200_p50_ms": round(statistics.median(page_times), 2),
    "ratio_to_live": round(statistics.median(times) / statistics.median(live_times), 1),
    "ratio_to_rest_page200": round(statistics.median(times) / statistics.median(page_times), 2),
    "bundle_bytes": size, "entries": len(entries),
    "plan_version": next(e["resource"]["meta"]["versionId"] for e in bundle["entry"] if e["resource"]["resourceType"] == "CarePlan"),
    "resources": kinds,
}))
