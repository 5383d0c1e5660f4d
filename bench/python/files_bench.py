#!/usr/bin/env python3
"""Python Mitogen 0.3.54's file transfer, for bench/run's file section.

    bench/.venv/bin/python bench/python/files_bench.py DIR [ENV_FILE] [--quick]

DIR holds the files bench_files left (--dir): src (random), ssh-random and
ssh-text. The target pulls each from the master's FileService
(mitogen.service.FileService.get, the way Ansible's Mitogen strategy moves
files); the time is from the call to the file complete on the target.
Prints JSON lines (impl "python").
"""

import json
import os
import sys
import time

import mitogen.service
import mitogen.utils

from bench_remote import fetch_file


def emit(scenario, value, unit):
    rec = {"scenario": scenario, "impl": "python", "value": value, "unit": unit}
    print(json.dumps(rec), flush=True)


def best(reps, size, f):
    top = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        top = max(top, size / (1 << 20) / (time.perf_counter() - t0))
    return round(top, 1)


def run(router, d, env, quick):
    fs = mitogen.service.FileService(router)
    pool = mitogen.service.Pool(router, services=[fs], size=4)
    try:
        transfers(router, fs, d, env, quick)
    finally:
        pool.stop(join=True)  # its threads would keep the process alive


def transfers(router, fs, d, env, quick):
    reps = 2 if quick else 3
    src = os.path.join(d, "src")
    fs.register(src)
    child = router.local()
    size = os.path.getsize(src)
    dst = os.path.join(d, "py-dst")
    emit("files_local_put", best(reps, size, lambda: child.call(fetch_file, router.myself(), src, dst)), "MiB/s")
    if not env:
        return
    for kind in ("random", "text"):
        path = os.path.join(d, "ssh-" + kind)
        fs.register(path)
        size = os.path.getsize(path)
        for comp in (False, True):
            ctx = router.ssh(
                hostname=env["TB_HOST1"], username="root", compression=comp,
                identity_file=env["TB_KEY"], python_path="/usr/bin/python3",
                ssh_args=["-o", "UserKnownHostsFile=" + env["TB_KNOWN_HOSTS"],
                          "-o", "GlobalKnownHostsFile=/dev/null"])
            rate = best(reps, size, lambda: ctx.call(fetch_file, router.myself(), path, dst))
            emit("files_ssh_put_%s_comp_%s" % (kind, "on" if comp else "off"), rate, "MiB/s")
            ctx.shutdown(wait=True)
    os.unlink(dst)


def main():
    # Absolute: the test hosts share this file system, not this cwd.
    d = os.path.abspath(sys.argv[1])
    env = {}
    if len(sys.argv) > 2 and not sys.argv[2].startswith("--"):
        for line in open(sys.argv[2]):
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                env[k] = v
    mitogen.utils.run_with_router(run, d, env, "--quick" in sys.argv)


if __name__ == "__main__":
    main()
