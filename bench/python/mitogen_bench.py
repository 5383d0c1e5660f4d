#!/usr/bin/env python3
"""Reference figures from Python Mitogen 0.3.54 for the mitogen-rs benchmarks.

Run with the venv made by setup.sh:

    bench/.venv/bin/python bench/python/mitogen_bench.py [--quick] [--only NAME,...]

Prints one JSON object per line on stdout:
    {"scenario": NAME, "impl": "python", "value": FLOAT|null, "unit": UNIT, ...}

How cost grows: hop_rtt_{1,3,5,10} time a no-op call to the node at that
depth of one chain of 10 contexts, each started via the previous (plus
per_hop_us); start_flat_N starts N contexts from the master, start_tree_N
starts ceil(sqrt(N)) from the master and the rest via those, round-robin.
A start scenario that would pass BUDGET_S seconds is skipped (value null,
with a note), and one that passes it while running is abandoned likewise.
Every start scenario shuts its contexts down and waits until their processes
have gone before the next one begins.

The functions called remotely live in bench_remote.py beside this file, which
Mitogen's module forwarder serves to each child on first use (see its
docstring for why not in this script).
"""

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import mitogen.core
import mitogen.utils

from bench_remote import (drain_inbox, emit_chunks, emit_small, getpid,
                          noop, open_inbox, payload, payload_len, prepare_payload,
                          take_payload)


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
        ctx.call(prepare_payload, n)
        t0 = time.perf_counter()
        got = ctx.call(take_payload)
        from_child.append(time.perf_counter() - t0)
        assert len(got) == n
        del got
    emit("bulk_from_child", cfg.bulk_mib / statistics.median(from_child),
         "MiB/s", bytes=n, note=note + "; the child builds the payload "
         "before the clock starts")


def bench_streams(router, cfg, ctx):
    """Messages/s and MiB/s through a Sender to a Receiver, each way."""
    chunk = 64 * 1024
    n_chunks = cfg.bulk_mib * MiB // chunk
    mib = n_chunks * chunk / MiB
    n = cfg.stream_msgs
    sender = ctx.call(open_inbox)
    t0 = time.perf_counter()
    for i in range(n):
        sender.send(i)
    ctx.call(drain_inbox, n)
    emit("stream_msgs_to_child", n / (time.perf_counter() - t0), "msgs/s", n=n)
    data = payload(chunk)
    t0 = time.perf_counter()
    for _ in range(n_chunks):
        sender.send(data)
    assert ctx.call(drain_inbox, n_chunks) == n_chunks * chunk
    emit("stream_mib_to_child", mib / (time.perf_counter() - t0), "MiB/s",
         chunk=chunk)

    recv = mitogen.core.Receiver(router)
    t0 = time.perf_counter()
    ctx.call_no_reply(emit_small, recv.to_sender(), n)
    for _ in range(n):
        recv.get(timeout=120).unpickle()
    emit("stream_msgs_from_child", n / (time.perf_counter() - t0), "msgs/s", n=n)
    t0 = time.perf_counter()
    ctx.call_no_reply(emit_chunks, recv.to_sender(), chunk, n_chunks)
    got = 0
    for _ in range(n_chunks):
        got += len(recv.get(timeout=120).unpickle())
    assert got == n_chunks * chunk
    emit("stream_mib_from_child", mib / (time.perf_counter() - t0), "MiB/s",
         chunk=chunk)
    recv.close()


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

# ---------------------------------------------------------------- growth

HOPS = [1, 3, 5, 10]
START_SIZES = [10, 50, 100, 200]
BUDGET_S = 90.0
# Python Mitogen's idle child is ~20 MiB; keep well clear of memory pressure.
CHILD_MIB = 40


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (at most 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return None


def descendants():
    """Number of live (non-zombie) processes descended from this one."""
    me = os.getpid()
    parent = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 1:].split()
        if len(fields) < 2 or fields[0] == "Z":
            continue
        parent[int(name)] = int(fields[1])
    count = 0
    for pid in parent:
        p = pid
        for _ in range(64):
            pp = parent.get(p)
            if pp == me:
                count += 1
                break
            if pp is None or pp <= 1:
                break
            p = pp
    return count


def cleanup(contexts, baseline, timeout=20.0):
    """Shuts every context down (children before their parents), waits for
    the disconnects and for the processes to go; returns how many extra
    descendants were still alive at the end."""
    deadline = time.monotonic() + timeout
    latches = []
    for ctx in contexts:
        try:
            latches.append(ctx.shutdown(wait=False))
        except Exception:
            pass
    for latch in latches:
        try:
            latch.get(timeout=max(0.01, deadline - time.monotonic()))
        except mitogen.core.TimeoutError:
            pass
    while True:
        n = descendants()
        if n <= baseline or time.monotonic() > deadline:
            return max(0, n - baseline)
        time.sleep(0.02)


class OverBudget(Exception):
    pass


def bench_hops(router, cfg, hops):
    baseline = descendants()
    t0 = time.perf_counter()
    chain = []
    try:
        for _ in range(max(hops)):
            via = chain[-1] if chain else None
            chain.append(router.local(via=via))
        chain_s = time.perf_counter() - t0
        med = {}
        for d in hops:
            ctx = chain[d - 1]
            for _ in range(cfg.warmup):
                ctx.call(noop)
            samples = []
            for _ in range(cfg.calls):
                t = time.perf_counter()
                ctx.call(noop)
                samples.append((time.perf_counter() - t) * 1e6)
            med[d] = statistics.median(samples)
            emit("hop_rtt_%d" % d, med[d], "us", p99=percentile(samples, 99),
                 n=len(samples), chain_start_s=round(chain_s, 3))
        if 1 in med and 10 in med:
            emit("per_hop_us", (med[10] - med[1]) / 9.0, "us",
                 note="(hop_rtt_10 - hop_rtt_1) / 9")
    finally:
        left = cleanup(list(reversed(chain)), baseline)
        if left:
            print("bench: %d hop-chain processes outlived their shutdown" % left,
                  file=sys.stderr)


def start_contexts(router, n, tree, deadline):
    """Starts n contexts (flat, or as a tree), then calls each once. Returns
    (seconds, [contexts, leaves first]); raises OverBudget past deadline,
    with the contexts started so far in its args for cleanup."""
    t0 = time.perf_counter()
    first, rest = [], []
    k = int(math.ceil(math.sqrt(n))) if tree else n
    try:
        for _ in range(k):
            first.append(router.local())
            if time.monotonic() > deadline:
                raise OverBudget(len(first))
        for i in range(n - k):
            rest.append(router.local(via=first[i % k]))
            if time.monotonic() > deadline:
                raise OverBudget(len(first) + len(rest))
        for ctx in first + rest:
            ctx.call(noop)
            if time.monotonic() > deadline:
                raise OverBudget(n)
    except BaseException as e:
        e.contexts = rest + first
        raise
    return time.perf_counter() - t0, rest + first, k


def bench_start(router, cfg, kind, sizes):
    tree = kind == "tree"
    per_ctx = None  # seconds per context at the previous size
    for n in sizes:
        name = "start_%s_%d" % (kind, n)
        avail = mem_available_mib()
        if per_ctx is not None and per_ctx * n * 1.1 > BUDGET_S:
            emit(name, None, "s", n=n, note="skipped: %.2f s per context at the "
                 "previous size predicts %.0f s > %.0f s budget"
                 % (per_ctx, per_ctx * n, BUDGET_S))
            continue
        if avail is not None and avail < n * CHILD_MIB:
            emit(name, None, "s", n=n, note="skipped: %d MiB available < %d "
                 "contexts x %d MiB" % (avail, n, CHILD_MIB))
            continue
        baseline, fds0 = descendants(), open_fds()
        deadline = time.monotonic() + BUDGET_S
        try:
            dt, contexts, k = start_contexts(router, n, tree, deadline)
        except OverBudget as e:
            left = cleanup(e.contexts, baseline)
            emit(name, None, "s", n=n, left_over=left,
                 note="abandoned: %d of %d contexts done when the %.0f s "
                 "budget ran out" % (e.args[0], n, BUDGET_S))
            per_ctx = BUDGET_S / max(1, e.args[0])
            continue
        except Exception as e:
            left = cleanup(getattr(e, "contexts", []), baseline)
            emit(name, None, "s", n=n, left_over=left,
                 note="failed: %s: %s" % (type(e).__name__, e))
            continue
        fds = open_fds() - fds0
        left = cleanup(contexts, baseline)
        per_ctx = dt / n
        extra = {"first_level": k} if tree else {}
        emit(name, dt, "s", n=n, per_ctx_ms=round(per_ctx * 1e3, 3),
             master_fds=fds, left_over=left, **extra)


SCENARIOS = [
    "local_start_first_call", "fork_start_first_call", "call_rtt",
    "pipelined_calls", "bulk", "streams", "fifty_contexts", "idle_child_rss",
] + ["hop_rtt_%d" % d for d in HOPS] \
  + ["start_flat_%d" % n for n in START_SIZES] \
  + ["start_tree_%d" % n for n in START_SIZES]
GROUPS = ["hop_rtt", "start_flat", "start_tree"]


def run(router, cfg):
    only = set(cfg.only.split(",")) if cfg.only else set()
    unknown = only - set(SCENARIOS) - set(GROUPS)
    if unknown:
        sys.exit("unknown scenario(s): %s" % ", ".join(sorted(unknown)))
    want = only or set(SCENARIOS)

    def want_in(group, name, default):
        # By its own name always; by its group's or by default, only if
        # `default` (the sizes --quick keeps).
        return name in only or (default and (not only or group in only))

    if "local_start_first_call" in want:
        bench_local_start(router, cfg)
    if "fork_start_first_call" in want:
        bench_fork_start(router, cfg)
    if want & {"call_rtt", "pipelined_calls", "bulk", "streams"}:
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
            if "streams" in want:
                bench_streams(router, cfg, ctx)
        finally:
            ctx.shutdown(wait=True)
    if "fifty_contexts" in want:
        bench_many_contexts(router, cfg)
    hops = [d for d in HOPS if want_in("hop_rtt", "hop_rtt_%d" % d, True)]
    if hops:
        bench_hops(router, cfg, hops)
    for kind in ("flat", "tree"):
        sizes = [n for n in START_SIZES if want_in(
            "start_" + kind, "start_%s_%d" % (kind, n), n in cfg.start_sizes)]
        if sizes:
            bench_start(router, cfg, kind, sizes)
    if "idle_child_rss" in want:
        bench_idle_rss(router, cfg)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small counts, for smoke tests")
    p.add_argument("--only", default="",
                   help="comma-separated subset of: " + ", ".join(SCENARIOS)
                   + " (or a group: " + ", ".join(GROUPS) + ")")
    p.add_argument("--child-cpu", type=int, default=None,
                   help="run the call_rtt/pipelined/bulk child on this CPU")
    cfg = p.parse_args()
    if cfg.quick:
        cfg.starts, cfg.warmup, cfg.calls = 3, 20, 200
        cfg.pipelined, cfg.bulk_mib, cfg.bulk_reps, cfg.contexts = 1000, 64, 1, 10
        cfg.start_sizes = [10, 50]
        cfg.stream_msgs = 10000
    else:
        cfg.starts, cfg.warmup, cfg.calls = 10, 200, 2000
        cfg.pipelined, cfg.bulk_mib, cfg.bulk_reps, cfg.contexts = 10000, 64, 3, 50
        cfg.start_sizes = START_SIZES
        cfg.stream_msgs = 100000
    raise_nofile()
    mitogen.utils.run_with_router(run, cfg)


if __name__ == "__main__":
    main()
