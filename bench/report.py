#!/usr/bin/env python3
"""Prints the side-by-side table of bench/run's results (JSON lines)."""

import json
import sys

# scenario -> (bar for mitogen-rs from docs/DESIGN.md §8, higher_is_better)
BARS = {
    "local_start_first_call": ("<= 5 ms", False),
    "fork_start_first_call": ("<= 1 ms", False),
    "call_rtt": ("<= 2x raw socketpair", False),
    "pipelined_calls": (">= 500k/s", True),
    "bulk_to_child": (">= 80% of raw pipe", True),
    "bulk_from_child": (">= 80% of raw pipe", True),
    "fifty_contexts": ("<= 0.25 s", False),
    "idle_child_rss": ("<= 3 MiB", False),
}


def main(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        rows[(r["placement"], r["scenario"], r["impl"])] = r
    placements = ["unpinned", "one-cpu", "split"]
    print("%-10s %-24s %12s %12s %8s %12s %10s  %s" % (
        "placement", "scenario", "mitogen-rs", "python", "speedup", "raw", "rs/raw", "bar"))
    for pl in placements:
        for sc, (bar, higher) in BARS.items():
            rs = rows.get((pl, sc, "rust"))
            if rs is None:
                continue
            py = rows.get((pl, sc, "python"))
            unit = rs["unit"]
            v = rs["value"]
            pv = py["value"] if py and py["value"] is not None else None
            speed = ""
            if pv:
                speed = "%.1fx" % ((v / pv) if higher else (pv / v))
            ref = None
            if sc == "call_rtt":
                ref = rows.get((pl, "socketpair_rtt", "raw"))
            elif sc.startswith("bulk"):
                ref = rows.get((pl, "pipe_throughput", "raw"))
            refv = ref["value"] if ref else None
            ratio = "%.2f" % (v / refv) if refv else ""
            fmt = lambda x: "" if x is None else ("%.3g %s" % (x, unit))
            extra = ""
            if "p99" in rs:
                extra = "  p99 rs %.0f / py %s / raw %s" % (
                    rs["p99"], "%.0f" % py["p99"] if py and "p99" in py else "-",
                    "%.0f" % ref["p99"] if ref and "p99" in ref else "-")
            print("%-10s %-24s %12s %12s %8s %12s %10s  %s%s" % (
                pl, sc, fmt(v), fmt(pv), speed, fmt(refv), ratio, bar, extra))
    print("\nspeedup: how many times better mitogen-rs is than Python Mitogen "
          "(time: py/rs; rate: rs/py). rs/raw: mitogen-rs over the raw reference.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/results.jsonl")
