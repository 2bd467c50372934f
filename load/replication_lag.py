#!/usr/bin/env python3
"""Replication lag between two regions, measured side by side with the write load that causes it.

Writes 32-d points into the writer region at a fixed rate (batches over one keep-alive HTTP
connection), then reads the reader region's own histogram of replication delay
(`ruvector_region_replication_delay_seconds{peer=<writer region>}`: origin time of a write to
the moment the reader applied it; both regions on this machine share one clock) and reports
p50/p99 from its bucket deltas over the run, the write rate achieved, and how long the reader
took to hold every point after the last write was acknowledged.

    python3 load/replication_lag.py --writer http://127.0.0.1:8080 --reader http://127.0.0.1:8081 \
        --peer us --rate 1000 --seconds 30
    # convergence after a partition: freeze the writer's Redis (SIGSTOP) for the last 10 s
    python3 load/replication_lag.py ... --partition-pid $(cat /tmp/ruvector-regions/us/redis.pid)
    # maximum write throughput (no pacing), e.g. against a server with and one without Redis
    python3 load/replication_lag.py --writer http://127.0.0.1:8080 --max --batch 1000 --seconds 20

Standard library only, so it runs wherever the servers do.
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import time
import urllib.parse


class Http:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        res = self.conn.getresponse()
        text = res.read()
        return res.status, text

    def ok(self, method, path, body=None):
        status, text = self.call(method, path, body)
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {text[:300]!r}")
        return json.loads(text) if text else None


def buckets(base, peer):
    """Cumulative (le, count) of the reader's replication-delay histogram for `peer`."""
    _, text = Http(base).call("GET", "/metrics")
    out = []
    pat = re.compile(
        r'^ruvector_region_replication_delay_seconds_bucket\{(.*)\} ([0-9.e+]+)$'
    )
    for line in text.decode().splitlines():
        m = pat.match(line)
        if not m or f'peer="{peer}"' not in m.group(1):
            continue
        le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
        out.append((float("inf") if le == "+Inf" else float(le), float(m.group(2))))
    return sorted(out)


def quantile(before, after, q):
    """The q-quantile of the observations between two scrapes, interpolated in its bucket."""
    prev = dict(before)
    delta = [(le, c - prev.get(le, 0.0)) for le, c in after]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    want = q * total
    lo_le, lo_c = 0.0, 0.0
    for le, c in delta:
        if c >= want:
            if le == float("inf"):
                return lo_le
            return lo_le + (le - lo_le) * (want - lo_c) / max(c - lo_c, 1e-9)
        lo_le, lo_c = le, c
    return None


def count(base, collection):
    status, text = Http(base).call("GET", f"/api/v1/collections/{collection}")
    return json.loads(text)["count"] if status == 200 else -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writer", required=True)
    ap.add_argument("--reader")
    ap.add_argument("--peer", default="us", help="the writer's region name")
    ap.add_argument("--rate", type=float, default=1000, help="points per second")
    ap.add_argument("--batch", type=int, default=10, help="points per request")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--collection", default=f"lag{os.getpid()}")
    ap.add_argument("--max", action="store_true", help="no pacing: maximum write throughput")
    ap.add_argument("--partition-pid", type=int, help="SIGSTOP this pid (the writer's Redis) mid-run")
    ap.add_argument("--partition-s", type=float, default=10)
    a = ap.parse_args()

    w = Http(a.writer)
    w.ok("PUT", f"/api/v1/collections/{a.collection}", {"dimension": a.dim, "metric": "cosine"})
    rng = random.Random(7)
    before = buckets(a.reader, a.peer) if a.reader else []
    written = 0
    start = time.monotonic()
    stopped_at = None
    resumed_at = None
    interval = a.batch / a.rate
    nxt = start
    while time.monotonic() - start < a.seconds:
        # The partition covers the last partition_s seconds of the run, so the catch-up below
        # measures draining its backlog alone.
        if (a.partition_pid and stopped_at is None
                and time.monotonic() - start > a.seconds - a.partition_s):
            os.kill(a.partition_pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
        pts = [
            {"id": f"p{written + i}", "vector": [rng.gauss(0, 1) for _ in range(a.dim)]}
            for i in range(a.batch)
        ]
        w.ok("PUT", f"/api/v1/collections/{a.collection}/points", {"points": pts})
        written += a.batch
        if not a.max:
            nxt += interval
            sleep = nxt - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
    if stopped_at and resumed_at is None:
        os.kill(a.partition_pid, signal.SIGCONT)
        resumed_at = time.monotonic()
    elapsed = time.monotonic() - start
    last_ack = time.monotonic()
    print(f"writes: {written} points in {elapsed:.1f} s = {written / elapsed:.0f} points/s "
          f"(batches of {a.batch}, {a.dim}-d)")
    if not a.reader:
        return
    while count(a.reader, a.collection) < written:
        if time.monotonic() - last_ack > 120:
            raise SystemExit("the reader did not catch up within 120 s")
        time.sleep(0.01)
    caught_up = time.monotonic()
    print(f"reader held every point {1000 * (caught_up - last_ack):.0f} ms after the last ack")
    if resumed_at:
        print(f"partition of {a.partition_s:.0f} s healed; reader complete "
              f"{caught_up - resumed_at:.2f} s after it healed")
    after = buckets(a.reader, a.peer)
    for q in (0.5, 0.9, 0.99):
        v = quantile(before, after, q)
        print(f"replication delay p{int(q * 100)}: " + ("n/a" if v is None else f"{v * 1000:.1f} ms"))


if __name__ == "__main__":
    main()
