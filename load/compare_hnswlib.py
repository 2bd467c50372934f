#!/usr/bin/env python3
"""Runs hnswlib on the data `ruvector-load bench-ann --write-data DIR` wrote, with the same
M / ef_construction / ef sweep, and prints build time, index memory, recall@k and single-thread
QPS. `ruvector-load bench-ann --hnswlib PYTHON` runs it itself (with --json) and prints both
engines side by side with their ratios.
Usage: python3 load/compare_hnswlib.py DIR [--metric l2] [--json OUT]"""
import argparse
import json
import os
import time

import hnswlib
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    dim = raw[0]
    rows = raw.reshape(-1, dim + 1)[:, 1:]
    return rows.view(dtype) if dtype == np.float32 else rows


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--metric", default="l2", choices=["l2", "cosine", "dot"])
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here as JSON")
    a = ap.parse_args()
    base = np.ascontiguousarray(read_vecs(f"{a.dir}/base.fvecs", np.float32))
    queries = np.ascontiguousarray(read_vecs(f"{a.dir}/queries.fvecs", np.float32))
    gt = read_vecs(f"{a.dir}/gt.ivecs", np.int32)[:, : a.k]
    space = {"l2": "l2", "cosine": "cosine", "dot": "ip"}[a.metric]
    before = rss_bytes()
    index = hnswlib.Index(space=space, dim=base.shape[1])
    index.init_index(max_elements=len(base), M=a.m, ef_construction=a.ef_construction)
    index.set_num_threads(a.threads)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)))
    build = time.perf_counter() - t
    # Resident memory the index added (vectors, links, label map), measured after the build.
    index_bytes = rss_bytes() - before
    print(f"hnswlib build: {build:.2f} s with {a.threads} threads, "
          f"{index_bytes / len(base):.1f} bytes per point")
    print(f"{'ef':>5} {'recall':>9} {'qps(1 thr)':>12} {'qps(all)':>12}")
    rows = []
    for ef in [int(x) for x in a.ef.split(",")]:
        index.set_ef(ef)
        index.set_num_threads(1)
        # Best of three passes: the machine is shared and noisy (ruvector-load does the same).
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            found = 0
            for i, q in enumerate(queries):
                labels, _ = index.knn_query(q, k=a.k)
                found += len(set(labels[0]) & set(gt[i]))
            best = min(best, time.perf_counter() - t)
        qps1 = len(queries) / best
        index.set_num_threads(a.threads)
        t = time.perf_counter()
        index.knn_query(queries, k=a.k)
        qps_all = len(queries) / (time.perf_counter() - t)
        recall = found / (len(queries) * a.k)
        print(f"{ef:>5} {recall:>9.4f} {qps1:>12.0f} {qps_all:>12.0f}")
        rows.append({"ef": ef, "recall": recall, "qps_1_thread": qps1, "qps_all_threads": qps_all})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"build_s": build, "index_bytes": index_bytes, "points": len(base),
                       "sweep": rows}, f)


if __name__ == "__main__":
    main()
