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
    "calls_while_busy": ("", True),
    "bulk_to_child": (">= 80% of raw pipe", True),
    "bulk_from_child": (">= 80% of raw pipe", True),
    "broker_latency_stalled_peer": ("< 500 ms", False),
    "flood_mid_rss_growth": ("bounded (< 100 MiB)", False),
    "bulk_stream_1hop": (">= 80% of raw pipe", True),
    "bulk_stream_3hop": (">= 80% of raw pipe", True),
    "stream_msgs_to_child": ("", True),
    "stream_msgs_from_child": ("", True),
    "stream_mib_to_child": ("", True),
    "stream_mib_from_child": ("", True),
    "fifty_contexts": ("<= 0.25 s", False),
    "idle_child_rss": ("<= 3 MiB", False),
    "hop_rtt_1": ("", False),
    "hop_rtt_3": ("", False),
    "hop_rtt_5": ("", False),
    "hop_rtt_10": ("", False),
    "per_hop_us": ("<= 30 us", False),
    "ssh_start_cached": ("<= bare ssh true + 15 ms", False),
    "ssh_start_upload": ("", False),
    "ssh_call_rtt": ("", False),
    "fakessh_rsync_tree": ("", False),
    "fakessh_true_each": ("", False),
}
for _m in ("docker_exec", "podman_exec", "lxc", "setns_pid", "setns_docker", "setns_lxc",
           "kubectl", "lxd", "jail", "docker_image", "docker_exec_pyctr", "setns_docker_pyctr"):
    BARS["ctr_%s_start" % _m] = ("", False)
HOPS = [1, 3, 5, 10]
START_SIZES = [10, 50, 100, 200]
for _kind in ("flat", "tree"):
    for _n in START_SIZES:
        BARS["start_%s_%d" % (_kind, _n)] = ("<= 0.25 s" if _n == 50 else "", False)


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
            if pv and v:
                speed = "%.1fx" % ((v / pv) if higher else (pv / v))
            ref = None
            if sc == "call_rtt":
                ref = rows.get((pl, "socketpair_rtt", "raw"))
            elif sc.startswith("bulk"):
                ref = rows.get((pl, "pipe_throughput", "raw"))
            elif sc.startswith("ssh_start"):
                ref = rows.get((pl, "ssh_bare_true", "raw"))
            elif sc.startswith("ctr_"):
                ref = rows.get((pl, sc[:-len("_start")] + "_bare", "raw"))
            elif sc == "fakessh_rsync_tree":
                ref = rows.get((pl, "rsync_ssh_tree", "raw"))
            elif sc == "fakessh_true_each":
                ref = rows.get((pl, "ssh_true_each", "raw"))
            refv = ref["value"] if ref else None
            ratio = "%.2f" % (v / refv) if refv else ""
            fmt = lambda x: "" if x is None else ("%.3g %s" % (x, unit))
            if v is None:
                print("%-10s %-24s %12s  %s" % (pl, sc, "failed", rs.get("note", "")))
                continue
            extra = ""
            if "p99" in rs:
                extra = "  p99 rs %.0f / py %s / raw %s" % (
                    rs["p99"], "%.0f" % py["p99"] if py and "p99" in py else "-",
                    "%.0f" % ref["p99"] if ref and "p99" in ref else "-")
            if "ratio" in rs:
                extra += "  idle %.3g %s, ratio %.2f (no Python equivalent)" % (
                    rs["idle"], unit, rs["ratio"])
            if sc == "fakessh_rsync_tree" and "mib_per_s" in rs:
                extra += "  %.0f MiB: %.0f MiB/s (rsync over ssh: %s MiB/s)" % (
                    rs["mib"], rs["mib_per_s"],
                    "%.0f" % ref["mib_per_s"] if ref and "mib_per_s" in ref else "-")
            if sc.startswith("bulk"):
                mem = rows.get((pl, "pipe_into_memory", "raw"))
                if mem and mem["value"]:
                    extra += "  rs/pipe into fresh memory %.2f (%.3g %s)" % (
                        v / mem["value"], mem["value"], unit)
            if sc.startswith("ssh_start") and refv:
                extra += "  rs - bare ssh true = %+.1f ms" % (v - refv)
            if sc.startswith("ctr_") and refv:
                extra += "  rs - bare tool = %+.1f ms (%s)" % (v - refv, rs.get("engine", ""))
            pys = fmt(pv)
            if py and pv is None:
                pys = "skipped"
                extra += "  py: " + py.get("note", "no value")
            print("%-10s %-24s %12s %12s %8s %12s %10s  %s%s" % (
                pl, sc, fmt(v), pys, speed, fmt(refv), ratio, bar, extra))
    print("\nspeedup: how many times better mitogen-rs is than Python Mitogen "
          "(time: py/rs; rate: rs/py). rs/raw: mitogen-rs over the raw reference.")
    growth(rows, placements)
    files(rows)


def files(rows):
    """mitogen::files beside raw pipe, scp, rsync and Python Mitogen."""
    scen = sorted({sc for (pl, sc, _i) in rows if sc.startswith("files_")})
    if not scen:
        return
    impls = ["rust", "raw", "scp", "rsync", "python"]
    print("\nfile transfer (MiB/s unless shown; rs/best: mitogen-rs over the best "
          "reference; bars: ssh >= 0.95 x scp, local >= 0.80 x raw pipe, "
          "push20 tree <= one put + a small per-target cost)")
    print("%-42s" % "scenario" + "".join("%10s" % i for i in impls) + "%9s" % "rs/best")
    for sc in scen:
        vals = {}
        for i in impls:
            r = rows.get(("unpinned", sc, i))
            vals[i] = None if r is None else r["value"]
        unit = next(r["unit"] for (pl, s2, _i), r in rows.items() if s2 == sc)
        refs = [vals[i] for i in impls[1:] if vals[i]]
        ratio = ""
        if vals["rust"] and refs and unit == "MiB/s":
            ratio = "%.2f" % (vals["rust"] / max(refs))
        cells = "".join("%10s" % ("-" if vals[i] is None else "%.1f" % vals[i]) for i in impls)
        print("%-42s" % ("%s (%s)" % (sc, unit)) + cells + "%9s" % ratio)


def growth(rows, placements):
    """How cost grows with hop count and with the number of contexts."""
    def val(pl, sc, impl):
        r = rows.get((pl, sc, impl))
        return None if r is None else r["value"]

    def cell(x, fmt):
        return "-" if x is None else fmt % x

    lines = []
    for pl in placements:
        if val(pl, "per_hop_us", "rust") is None and all(
                val(pl, "start_%s_%d" % (k, n), "rust") is None
                for k in ("flat", "tree") for n in START_SIZES):
            continue
        lines.append("[%s]" % pl)
        rs, py = val(pl, "per_hop_us", "rust"), val(pl, "per_hop_us", "python")
        if rs is not None or py is not None:
            lines.append("  per extra hop (bar <= 30 us): mitogen-rs %s, python %s" % (
                cell(rs, "%.1f us"), cell(py, "%.1f us")))
            lines.append("  %-28s" % "no-op rtt by depth" + "".join(
                "%18s" % ("hop %d" % d) for d in HOPS))
            for impl, label in (("rust", "mitogen-rs"), ("python", "python")):
                lines.append("    %-26s" % label + "".join(
                    "%18s" % cell(val(pl, "hop_rtt_%d" % d, impl), "%.0f us")
                    for d in HOPS))
        for kind in ("flat", "tree"):
            if all(val(pl, "start_%s_%d" % (kind, n), impl) is None
                   for n in START_SIZES for impl in ("rust", "python")):
                continue
            lines.append("  %-28s" % ("start_%s: ms/ctx (total)" % kind)
                         + "".join("%18s" % ("N=%d" % n) for n in START_SIZES))
            for impl, label in (("rust", "mitogen-rs"), ("python", "python")):
                cells = []
                for n in START_SIZES:
                    t = val(pl, "start_%s_%d" % (kind, n), impl)
                    r = rows.get((pl, "start_%s_%d" % (kind, n), impl))
                    cells.append("-" if r is None else "skipped" if t is None
                                 else "%.1f (%.3g s)" % (t * 1e3 / n, t))
                lines.append("    %-26s" % label + "".join("%18s" % c for c in cells))
    if lines:
        print("\nhow cost grows (flat per-context cost means linear growth; "
              "bar: 50 contexts <= 0.25 s, i.e. <= 5 ms each)")
        print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/out/results.jsonl")
