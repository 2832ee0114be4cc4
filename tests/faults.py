"""Kill ``diffsweep`` at every filesystem write it makes under a store: a fork server.

Run as a script (never imported by the package)::

    python tests/faults.py JOBS.json

``JOBS.json`` holds ``{"store": PATH, "args": [...diffsweep arguments...],
"kill_after": [N, ...], "prepare": PATH or null, "count_only": bool}``. The server
imports the CLI once, then for each N forks a child that copies ``prepare`` (a
store to start from) to ``store`` + ``.N``, and runs the real command line on that
copy with every filesystem mutation under it counted: creating a file (``open`` for
writing, ``os.open`` with ``O_CREAT``), ``os.replace``/``rename``/``link`` (logged
by their destination),
``unlink``/``remove``, ``mkdir``/``rmdir`` and what ``shutil.rmtree`` does inside.
Right after the N-th mutation returns, the child sends itself ``SIGKILL`` — a real
kill, at a write boundary rather than after a guessed sleep. The server prints one
JSON line per N: how the child ended and how many mutations it had made.

With ``count_only`` it runs the command once without killing and reports the
mutations, each with its operation and path, so a test can pick the kill points of
each stage (lock, root, bookkeeping, variables, blocks, attributes).
"""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import signal
import sys
import threading


def _install(root: str, kill_after: int | None, log: list[tuple[str, str]]) -> None:
    """Count mutations under ``root``; SIGKILL this process after the ``kill_after``-th."""
    root = os.path.realpath(root)
    lock = threading.Lock()
    in_rmtree = threading.local()

    def under(path: object, dir_fd: object = None) -> bool:
        if dir_fd is not None:
            return bool(getattr(in_rmtree, "active", False))
        if isinstance(path, int):
            return False
        text = os.fsdecode(path)  # type: ignore[arg-type]
        if not os.path.isabs(text):
            text = os.path.join(os.getcwd(), text)
        full = os.path.realpath(os.path.dirname(text))
        return full == root or full.startswith(root + os.sep) or os.path.realpath(text) == root

    def counted(operation: str, path: object, dir_fd: object = None) -> None:
        if not under(path, dir_fd):
            return
        with lock:
            log.append((operation, os.fsdecode(path) if not isinstance(path, int) else str(path)))
            if kill_after is not None and len(log) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    def wrap(module: object, name: str, writes: object = None) -> None:
        original = getattr(module, name)
        moves = name in ("replace", "rename", "link")  # what changes is the destination

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if writes is None or writes(*args, **kwargs):
                path = args[1] if moves else (args[0] if args else kwargs.get("path"))
                counted(name, path, kwargs.get("dir_fd"))
            return result

        setattr(module, name, wrapper)

    for name in ("replace", "rename", "link", "unlink", "remove", "rmdir", "mkdir"):
        wrap(os, name)
    wrap(os, "open", lambda path, flags, *a, **k: bool(flags & os.O_CREAT))

    def writing(file, mode="r", *args, **kwargs):
        return isinstance(mode, str) and any(c in mode for c in "wxa+")

    wrap(io, "open", writing)
    builtins.open = io.open

    original_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        inside = under(path) or os.path.realpath(os.fsdecode(path)) == root
        previous = getattr(in_rmtree, "active", False)
        in_rmtree.active = inside or previous
        try:
            return original_rmtree(path, *args, **kwargs)
        finally:
            in_rmtree.active = previous

    rmtree.avoids_symlink_attacks = original_rmtree.avoids_symlink_attacks  # type: ignore[attr-defined]
    shutil.rmtree = rmtree  # type: ignore[assignment]


def _child(job: dict, kill_after: int | None, store: str, report: str) -> None:
    from pipeline.cli.main import cli

    if job.get("prepare"):
        shutil.copytree(job["prepare"], store, symlinks=True)
    log: list[tuple[str, str]] = []
    _install(store, kill_after, log)
    args = [store if a == "{store}" else a for a in job["args"]]
    descriptor = os.open(report + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 2)
    os.dup2(descriptor, 1)
    code = 0
    try:
        cli.main(args, prog_name="diffsweep", standalone_mode=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    with io.FileIO(report, "w") as file:
        file.write(json.dumps({"exit": code, "mutations": log}).encode())
    os._exit(code)


def main(path: str) -> None:
    import pipeline.cli.main  # noqa: F401  (import the heavy modules once, before forking)
    import pipeline.cli.run  # noqa: F401
    import pipeline.runner  # noqa: F401

    job = json.loads(open(path).read())
    points = [None] if job.get("count_only") else job["kill_after"]
    for point in points:
        store = job["store"] if point is None else f"{job['store']}.{point}"
        report = f"{store}.report"
        pid = os.fork()
        if pid == 0:
            try:
                _child(job, point, store, report)
            finally:
                os._exit(99)
        _, status = os.waitpid(pid, 0)
        result: dict = {"kill_after": point, "store": store}
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        else:
            result["exit"] = os.WEXITSTATUS(status)
            if os.path.exists(report):
                result.update(json.loads(open(report).read()))
        if os.path.exists(report + ".err"):
            result["output"] = open(report + ".err").read()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
