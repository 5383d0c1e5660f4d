#!/usr/bin/env python3
"""Python Mitogen 0.3.54 in a container, for bench/run's container section.

    bench/.venv/bin/python bench/python/ctr_bench.py ENV_FILE CONTAINER [--quick]

CONTAINER is a podman container with the host's Python visible
(bench/run makes it: the test bed's busybox image with /usr, /lib and
/lib64 mounted read-only), reached with the real docker CLI on podman's
API (TB_DOCKER) by router.docker() and by router.setns(kind="docker").
Prints JSON lines ctr_docker_exec_pyctr_start and
ctr_setns_docker_pyctr_start (router.X() -> first call), like
bench_containers does for mitogen-rs in the same container.
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


def run(router, env, ctr, quick):
    n = 3 if quick else 10
    cases = [
        ("docker_exec_pyctr", lambda: router.docker(
            container=ctr, docker_path=env["TB_DOCKER"], python_path="/usr/bin/python3")),
        ("setns_docker_pyctr", lambda: router.setns(
            container=ctr, kind="docker", docker_path=env["TB_DOCKER"],
            python_path="/usr/bin/python3")),
    ]
    for name, connect in cases:
        try:
            connect().shutdown(wait=True)
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                ctx = connect()
                ctx.call(noop)
                samples.append((time.perf_counter() - t0) * 1e3)
                ctx.shutdown(wait=True)
            emit("ctr_%s_start" % name, statistics.median(samples), "ms", n=n)
        except Exception as e:  # reported, not fatal: the other case may run
            emit("ctr_%s_start" % name, None, "ms", note="%s: %s" % (type(e).__name__, e))


def main():
    env = {}
    for line in open(sys.argv[1]):
        if "=" in line and not line.startswith("#"):
            k, v = line.strip().split("=", 1)
            env[k] = v
    mitogen.utils.run_with_router(run, env, sys.argv[2], "--quick" in sys.argv)


if __name__ == "__main__":
    main()
