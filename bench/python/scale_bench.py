#!/usr/bin/env python3
"""Python Mitogen 0.3.54 on many ssh hosts at once, for bench/scale.sh.

    bench/.venv/bin/python bench/python/scale_bench.py SSH_CONFIG KEY \
        KNOWN_HOSTS FORKS 'true'|'uname -a' HOST...

What a Mitogen user would write to run one command on N hosts: one
Router, every host connected from a thread pool of FORKS threads
(router.ssh() blocks until the context is up), the command run there
through subprocess, the output brought back. Exits 0 when every host ran
the command with status 0; prints `host: line` for `uname -a`. Timed from
outside (bench/scale.sh), so the interpreter's start and imports count,
as they do for the other tools.
"""

import concurrent.futures
import subprocess
import sys

import mitogen.utils


def work(router, cfg, key, known, cmd, host):
    ctx = router.ssh(
        hostname=host, username="root", identity_file=key,
        python_path="/usr/bin/python3",
        ssh_args=["-F", cfg, "-o", "UserKnownHostsFile=" + known,
                  "-o", "GlobalKnownHostsFile=/dev/null"])
    if cmd == ["true"]:
        return host, ctx.call(subprocess.call, cmd), ""
    out = ctx.call(subprocess.check_output, cmd)
    return host, 0, out.decode(errors="replace")


def main(router):
    cfg, key, known, forks, cmd = sys.argv[1:6]
    hosts = sys.argv[6:]
    argv = cmd.split()
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(int(forks)) as pool:
        jobs = [pool.submit(work, router, cfg, key, known, argv, h) for h in hosts]
        for j in jobs:
            try:
                host, rc, out = j.result()
            except Exception as e:  # unreachable or failed: counted, named
                print("error:", e, file=sys.stderr)
                bad += 1
                continue
            for line in out.splitlines():
                print(f"{host}: {line}")
            bad += rc != 0
    return bad


if __name__ == "__main__":
    sys.exit(1 if mitogen.utils.run_with_router(main) else 0)
