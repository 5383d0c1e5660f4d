#!/usr/bin/env python3
"""Python Mitogen 0.3.54 over ssh, for bench/run's ssh section.

    bench/.venv/bin/python bench/python/ssh_bench.py ENV_FILE [--quick]

ENV_FILE is the test bed's (scripts/testbed/setup.sh). Prints JSON lines:
ssh_start_cached (router.ssh() -> first call; Mitogen has no agent cache,
it sends its core to the interpreter on every start) and ssh_call_rtt.
The target's interpreter is /usr/bin/python3 (Debian has no `python`).
"""

import json
import statistics
import sys
import time

import mitogen.utils

from bench_remote import noop


def emit(scenario, value, unit, **extra):
    rec = {"scenario": scenario, "impl": "python", "value": value, "unit": unit}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def run(router, env, quick):
    n_start, n_rtt = (5, 200) if quick else (15, 2000)

    def connect():
        return router.ssh(
            hostname=env["TB_HOST1"], username="root",
            identity_file=env["TB_KEY"], python_path="/usr/bin/python3",
            ssh_args=["-o", "UserKnownHostsFile=" + env["TB_KNOWN_HOSTS"],
                      "-o", "GlobalKnownHostsFile=/dev/null"])

    connect().shutdown(wait=True)
    samples = []
    for _ in range(n_start):
        t0 = time.perf_counter()
        ctx = connect()
        ctx.call(noop)
        samples.append((time.perf_counter() - t0) * 1e3)
        ctx.shutdown(wait=True)
    emit("ssh_start_cached", statistics.median(samples), "ms", n=n_start)
    ctx = connect()
    for _ in range(n_rtt // 10):
        ctx.call(noop)
    samples = []
    for _ in range(n_rtt):
        t0 = time.perf_counter()
        ctx.call(noop)
        samples.append((time.perf_counter() - t0) * 1e6)
    emit("ssh_call_rtt", statistics.median(samples), "us", n=n_rtt)
    ctx.shutdown(wait=True)


def main():
    env = {}
    for line in open(sys.argv[1]):
        if "=" in line and not line.startswith("#"):
            k, v = line.strip().split("=", 1)
            env[k] = v
    mitogen.utils.run_with_router(run, env, "--quick" in sys.argv)


if __name__ == "__main__":
    main()
