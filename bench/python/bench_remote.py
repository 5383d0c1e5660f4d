"""Functions that mitogen_bench.py runs inside child contexts.

Kept in their own tiny module rather than in the benchmark script: Mitogen
would otherwise forward the script itself as the child's ``__main__`` and the
child would import everything the script imports (argparse, json, statistics
and friends), adding tens of ms to every context's first call. This module
imports only ``os``, so the first call costs one small module fetch.
"""

import os

import mitogen.core

_inbox = []


def noop():
    return None


def getpid():
    return os.getpid()


def payload_len(data):
    return len(data)


_prepared = []


def prepare_payload(n):
    """Builds a payload for take_payload, outside the timed call."""
    _prepared[:] = [payload(n)]


def take_payload():
    return _prepared.pop()


def payload(n):
    # Byte values 0..127 only. Mitogen pickles with protocol 2, where Python 3
    # bytes travel as a latin-1 str that pickle stores as UTF-8: bytes >= 0x80
    # would cost two wire bytes each. Staying below 0x80 makes the wire size
    # equal the payload size, so MiB/s means the same thing as for raw.
    pattern = bytes(range(128))
    return (pattern * (n // len(pattern) + 1))[:n]


@mitogen.core.takes_router
def open_inbox(router):
    recv = mitogen.core.Receiver(router)
    _inbox[:] = [recv]
    return recv.to_sender()


def drain_inbox(n):
    recv = _inbox[0]
    seen = 0
    for _ in range(n):
        data = recv.get(timeout=60).unpickle()
        seen += len(data) if isinstance(data, bytes) else 0
    return seen


def emit_small(sender, n):
    for i in range(n):
        sender.send(i)


def emit_chunks(sender, size, n):
    chunk = payload(size)
    for _ in range(n):
        sender.send(chunk)


def fetch_file(master, path, dest):
    """Pulls `path` from the master's FileService into `dest`."""
    import mitogen.service
    with open(dest, "wb") as fp:
        ok, _meta = mitogen.service.FileService.get(master, path, fp)
    return ok
