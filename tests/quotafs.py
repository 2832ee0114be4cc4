"""A local file system with a byte quota, for the disk-full test where no tmpfs can be mounted.

``quotafs:///abs/path`` is the local path ``/abs/path``; a write that would bring the
bytes under ``$DIFFSWEEP_TEST_QUOTA_ROOT`` above ``$DIFFSWEEP_TEST_QUOTA`` fails with
``OSError(ENOSPC)``, as a full disk does.  The usage is measured on disk at each write,
so the quota holds across processes (the CLI and every dask worker).  Processes find
the protocol through an ``fsspec.specs`` entry point (see ``register_entry_point``),
the way installed file systems such as s3fs register themselves.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "quotafs"


def _usage(root: str) -> int:
    return sum(path.stat().st_size for path in Path(root).rglob("*") if path.is_file())


class QuotaFileSystem(LocalFileSystem):
    """Local files; writes beyond the quota raise ``OSError(ENOSPC)``."""

    protocol = (PROTOCOL,)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**{"auto_mkdir": True, **kwargs})

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: object) -> None:
        quota = int(os.environ["DIFFSWEEP_TEST_QUOTA"])
        if _usage(os.environ["DIFFSWEEP_TEST_QUOTA_ROOT"]) + len(value) > quota:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        super().pipe_file(path, value, mode=mode, **kwargs)


def register_entry_point(directory: Path) -> None:
    """Make ``quotafs://`` known to every Python started with ``directory`` on its path."""
    info = directory / "diffsweep_test_quotafs-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: diffsweep-test-quotafs\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[fsspec.specs]\n{PROTOCOL} = quotafs:QuotaFileSystem\n")
