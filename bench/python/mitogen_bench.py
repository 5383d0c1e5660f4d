#!/usr/bin/env python3
"""Reference figures from Python Mitogen 0.3.54 for the mitogen-rs benchmarks.

Run with the venv made by setup.sh:

    bench/.venv/bin/python bench/python/mitogen_bench.py [--quick] [--only NAME,...]

Prints one JSON object per line on stdout:
    {"scenario": NAME, "impl": "python", "value": FLOAT|null, "unit": UNIT, ...}

The functions called remotely live in bench_remote.py beside this file, which
Mitogen's module forwarder serves to each child on first use (see its
docstring for why not in this script).
"""

import argparse
import json
import os
import statistics
import sys
import time

import mitogen.utils

from bench_remote import getpid, make_payload, noop, payload, payload_len


# ---------------------------------------------------------------- helpers

MiB = 1024 * 1024


def emit(scenario, value, unit, **extra):
    rec = {"scenario": scenario, "impl": "python", "value": value, "unit": unit}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def percentile(samples, pct):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(pct / 100.0 * (len(s) - 1))))]


def start_first_call(router, method, n):
    """Median ms from router.<method>() to the first call returning."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        ctx = getattr(router, method)()
        ctx.call(noop)
        samples.append((time.perf_counter() - t0) * 1e3)
        ctx.shutdown(wait=True)
    return samples


# ---------------------------------------------------------------- scenarios

def bench_local_start(router, cfg):
    s = start_first_call(router, "local", cfg.starts)
    emit("local_start_first_call", statistics.median(s), "ms",
         n=len(s), min=min(s), max=max(s))


def bench_fork_start(router, cfg):
    try:
        s = start_first_call(router, "fork", cfg.starts)
    except Exception as e:  # fork may be refused; report why, keep going
        emit("fork_start_first_call", None, "ms",
             note="router.fork() failed: %s: %s" % (type(e).__name__, e))
        return
    emit("fork_start_first_call", statistics.median(s), "ms",
         n=len(s), min=min(s), max=max(s),
         note="forked from the master, so the child inherits its modules")


def bench_call_rtt(router, cfg, ctx):
    for _ in range(cfg.warmup):
        ctx.call(noop)
    samples = []
    for _ in range(cfg.calls):
        t0 = time.perf_counter()
        ctx.call(noop)
        samples.append((time.perf_counter() - t0) * 1e6)
    emit("call_rtt", statistics.median(samples), "us",
         p99=percentile(samples, 99), n=len(samples))


def bench_pipelined(router, cfg, ctx):
    ctx.call(noop)  # warm: module already loaded in the child
    t0 = time.perf_counter()
    receivers = [ctx.call_async(noop) for _ in range(cfg.pipelined)]
    for recv in receivers:
        recv.get().unpickle()
    dt = time.perf_counter() - t0
    emit("pipelined_calls", cfg.pipelined / dt, "calls/s",
         n=cfg.pipelined, note="call_async x n, then every result collected")


def bench_bulk(router, cfg, ctx):
    n = cfg.bulk_mib * MiB
    note = ("one message per transfer (%d MiB < max_message_size %d MiB); "
            "payload bytes 0..127 so pickle protocol 2 adds no expansion; "
            "median of %d" % (cfg.bulk_mib, router.max_message_size // MiB,
                              cfg.bulk_reps))
    data = payload(n)
    ctx.call(noop)

    to_child = []
    for _ in range(cfg.bulk_reps):
        t0 = time.perf_counter()
        assert ctx.call(payload_len, data) == n
        to_child.append(time.perf_counter() - t0)
    emit("bulk_to_child", cfg.bulk_mib / statistics.median(to_child), "MiB/s",
         bytes=n, note=note)

    from_child = []
    for _ in range(cfg.bulk_reps):
        t0 = time.perf_counter()
        got = ctx.call(make_payload, n)
        from_child.append(time.perf_counter() - t0)
        assert len(got) == n
        del got
    emit("bulk_from_child", cfg.bulk_mib / statistics.median(from_child),
         "MiB/s", bytes=n, note=note + "; includes building the payload "
         "in the child (~ms)")


def bench_many_contexts(router, cfg):
    t0 = time.perf_counter()
    ctxs = []
    for _ in range(cfg.contexts):
        ctx = router.local()
        ctx.call(noop)
        ctxs.append(ctx)
    dt = time.perf_counter() - t0
    for ctx in ctxs:
        ctx.shutdown(wait=True)
    emit("fifty_contexts", dt, "s", n=cfg.contexts,
         note="sequential: each router.local() then one call, in turn")


def bench_idle_rss(router, cfg):
    ctx = router.local()
    pid = ctx.call(getpid)
    time.sleep(0.5)  # let it settle into its idle loop
    rss_kib = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    ctx.shutdown(wait=True)
    emit("idle_child_rss", rss_kib / 1024.0, "MiB", pid=pid)


SCENARIOS = [
    "local_start_first_call", "fork_start_first_call", "call_rtt",
    "pipelined_calls", "bulk", "fifty_contexts", "idle_child_rss",
]


def run(router, cfg):
    want = set(cfg.only.split(",")) if cfg.only else set(SCENARIOS)
    unknown = want - set(SCENARIOS)
    if unknown:
        sys.exit("unknown scenario(s): %s" % ", ".join(sorted(unknown)))

    if "local_start_first_call" in want:
        bench_local_start(router, cfg)
    if "fork_start_first_call" in want:
        bench_fork_start(router, cfg)
    if want & {"call_rtt", "pipelined_calls", "bulk"}:
        if cfg.child_cpu is not None:
            # The child alone on another CPU: the "split" placement.
            ctx = router.local(python_path=["taskset", "-c", str(cfg.child_cpu),
                                            sys.executable])
        else:
            ctx = router.local()
        try:
            if "call_rtt" in want:
                bench_call_rtt(router, cfg, ctx)
            if "pipelined_calls" in want:
                bench_pipelined(router, cfg, ctx)
            if "bulk" in want:
                bench_bulk(router, cfg, ctx)
        finally:
            ctx.shutdown(wait=True)
    if "fifty_contexts" in want:
        bench_many_contexts(router, cfg)
    if "idle_child_rss" in want:
        bench_idle_rss(router, cfg)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small counts, for smoke tests")
    p.add_argument("--only", default="",
                   help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--child-cpu", type=int, default=None,
                   help="run the call_rtt/pipelined/bulk child on this CPU")
    cfg = p.parse_args()
    if cfg.quick:
        cfg.starts, cfg.warmup, cfg.calls = 3, 20, 200
        cfg.pipelined, cfg.bulk_mib, cfg.bulk_reps, cfg.contexts = 1000, 8, 1, 10
    else:
        cfg.starts, cfg.warmup, cfg.calls = 10, 200, 2000
        cfg.pipelined, cfg.bulk_mib, cfg.bulk_reps, cfg.contexts = 10000, 64, 3, 50
    mitogen.utils.run_with_router(run, cfg)


if __name__ == "__main__":
    main()
