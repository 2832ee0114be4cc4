"""TLS certificates for tests, made by the same script users run (deploy/docker/make-certs.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

MAKE_CERTS = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "make-certs.py"


def _module():
    spec = importlib.util.spec_from_file_location("diffsweep_make_certs", MAKE_CERTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_tls_files(directory: Path) -> dict[str, Path]:
    """CA plus scheduler/worker/client certificates for 127.0.0.1 and localhost.

    Keys: ``ca``, ``ca-key``, ``scheduler``, ``scheduler-key``, ``worker``, ``worker-key``,
    ``client``, ``client-key``.
    """
    return _module().make_certificates(directory, hosts=["127.0.0.1", "localhost"], days=1)


def dask_tls_args(files: dict[str, Path], role: str) -> list[str]:
    """``--tls-ca-file/--tls-cert/--tls-key`` arguments of `dask scheduler|worker` for ``role``."""
    return [
        "--tls-ca-file", str(files["ca"]),
        "--tls-cert", str(files[role]),
        "--tls-key", str(files[f"{role}-key"]),
    ]  # fmt: skip
