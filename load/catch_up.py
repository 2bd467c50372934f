#!/usr/bin/env python3
"""How long a region member with an empty disk takes to catch up (a new Cloud Run instance, a
region that lost its data directory), per million points.

Drives `deploy/local-regions.sh` with two regions: loads N points into the first region
(batches over one keep-alive HTTP connection), waits until the second holds them all, then
kills the second region with its data (`kill --wipe`), starts it again (`start-region`) and
times (a) until it is ready — which a starting instance answers only once its links have read
their backlogs (`regions.catch_up_wait_s`) — and (b) until it holds every point again: read
from its peer's change stream from the start, applied like any replicated write (durable,
indexed). Prints one JSON line.

    cargo build --release
    python3 load/catch_up.py --points 1000000 --dim 32

Standard library only, so it runs wherever the servers do.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication_lag import Http, count  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(*args):
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "deploy/local-regions.sh"), *args],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"local-regions.sh {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def wait_count(base, collection, want, limit_s):
    t = time.time()
    while time.time() - t < limit_s:
        if count(base, collection) >= want:
            return time.time() - t
        time.sleep(0.2)
    raise SystemExit(f"{base} did not reach {want} points in {limit_s} s: {count(base, collection)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--http-port", type=int, default=18180)
    ap.add_argument("--redis-port", type=int, default=16390)
    ap.add_argument("--dir", default="/tmp/ruvector-catch-up")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/ruvector-streaming"))
    a = ap.parse_args()
    subprocess.run(["rm", "-rf", a.dir], check=True)
    common = ["--dir", a.dir]
    script("start", "--http-port", str(a.http_port), "--redis-port", str(a.redis_port),
           "--bin", a.bin, "--regions", "us,eu", *common)
    us, eu = f"http://127.0.0.1:{a.http_port}", f"http://127.0.0.1:{a.http_port + 1}"
    try:
        w = Http(us)
        w.ok("PUT", "/api/v1/collections/c", {"dimension": a.dim, "metric": "cosine"})
        rng = random.Random(7)
        t = time.time()
        for start in range(0, a.points, a.batch):
            pts = [{"id": f"p{i}", "vector": [rng.random() for _ in range(a.dim)]}
                   for i in range(start, min(a.points, start + a.batch))]
            while True:
                status, text = w.call("PUT", "/api/v1/collections/c/points", {"points": pts})
                if status in (429, 503):
                    time.sleep(0.05)
                    continue
                if status >= 300:
                    raise SystemExit(f"write: {status} {text[:200]!r}")
                break
        load_s = time.time() - t
        wait_count(eu, "c", a.points, 3600)
        script("kill", "eu", "--wipe", *common)
        t = time.time()
        script("start-region", "eu", "--wait", "7200", *common)
        ready_s = time.time() - t
        rest_s = wait_count(eu, "c", a.points, 3600)
        total_s = ready_s + rest_s
        print(json.dumps({
            "points": a.points, "dim": a.dim, "load_s": round(load_s, 1),
            "ready_s": round(ready_s, 2), "caught_up_s": round(total_s, 1),
            "points_per_s": round(a.points / total_s),
            "seconds_per_million": round(total_s * 1_000_000 / a.points, 1),
        }))
    finally:
        script("stop", *common)


if __name__ == "__main__":
    main()
