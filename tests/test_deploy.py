"""deploy/: every file parses, and compose, Kubernetes, SLURM and the CLI agree.

These are static checks: no Docker daemon, Kubernetes cluster or batch system is needed.
The commands in the manifests are checked against the real command lines they call
(`diffsweep run`, `dask scheduler`, `dask worker`).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from certs import MAKE_CERTS

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
KUBERNETES = DEPLOY / "kubernetes"
YAML_FILES = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"diffsweep:{VERSION}"
SCHEDULER_PORT, DASHBOARD_PORT = 8786, 8787
CERT_FILES = {
    f"/certs/{name}.pem" for role in ("ca", "scheduler", "worker", "client") for name in (role, f"{role}-key")
} - {"/certs/ca-key.pem"}  # fmt: skip

DOCKERFILE_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict:
    return _documents(DOCKER / "compose.yaml")[0]


def _kubernetes() -> dict[str, dict]:
    """kind -> the (single) manifest of that kind."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in _documents(path):
            assert document["kind"] not in found, f"two {document['kind']} manifests"
            found[document["kind"]] = document
    return found


def _k8s_containers() -> Iterator[tuple[str, dict, dict]]:
    """(where, container, pod spec) for every container in the Kubernetes manifests."""
    manifests = _kubernetes()
    cluster = manifests["DaskCluster"]["spec"]
    for role in ("scheduler", "worker"):
        pod = cluster[role]["spec"]
        for container in pod["containers"]:
            yield f"DaskCluster {role}", container, pod
    pod = manifests["Job"]["spec"]["template"]["spec"]
    for container in pod["containers"]:
        yield "Job", container, pod


def _compose_commands() -> dict[str, list[str]]:
    return {
        name: [str(a) for a in service["command"]]
        for name, service in _compose()["services"].items()
    }


def _all_commands() -> list[tuple[str, list[str]]]:
    commands = [(f"compose {name}", args) for name, args in _compose_commands().items()]
    commands += [(where, [str(a) for a in c["args"]]) for where, c, _pod in _k8s_containers()]
    return commands


def _options(command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("-")]


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = _documents(path)
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_every_deploy_file_is_known_and_documented() -> None:
    files = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file()}
    files -= {"README.md"}
    files = {f for f in files if not f.startswith(("docker/certs/", "docker/data/"))}
    assert files == {
        "docker/Dockerfile",
        "docker/Dockerfile.dockerignore",
        "docker/compose.yaml",
        "docker/make-certs.py",
        "kubernetes/daskcluster.yaml",
        "kubernetes/job.yaml",
        "kubernetes/networkpolicy.yaml",
        "kubernetes/pvc.yaml",
        "slurm/jobqueue.yaml",
        "slurm/run-sweep.sh",
    }
    readme = (DEPLOY / "README.md").read_text()
    for name in files - {"docker/Dockerfile.dockerignore"}:
        assert Path(name).name in readme, f"{name} is not described in deploy/README.md"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword, arguments.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def test_dockerfile_syntax_and_content() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert keywords[0] == "FROM"
    assert all(k.isupper() and k in DOCKERFILE_INSTRUCTIONS for k in keywords), keywords
    assert instructions[0][1].startswith("python:3.11")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert 'pip install ".[cluster]"' in runs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"dask-jobqueue", "cryptography"} <= {
        re.split(r"[<>=\[ ]", d)[0] for d in extras["cluster"]
    }
    # every COPY source exists and survives the Dockerfile-specific .dockerignore
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, arguments in instructions:
        if keyword == "COPY":
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in kept, f"{source} is excluded from the build context"
    exposed = {int(port) for k, a in instructions if k == "EXPOSE" for port in a.split()}
    assert exposed == {SCHEDULER_PORT, DASHBOARD_PORT}
    user = [a for k, a in instructions if k == "USER"]
    assert user and not user[-1].startswith(("root", "0")), "the image must not run as root"
    cmd = next(a for k, a in instructions if k == "CMD")
    assert cmd.startswith("[") and cmd.endswith("]")  # exec form


def test_shell_scripts_parse() -> None:
    for script in DEPLOY.rglob("*.sh"):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_make_certs_is_a_working_command(tmp_path: Path) -> None:
    """The documented one-time step, run as documented; then it refuses to overwrite."""
    command = [sys.executable, str(MAKE_CERTS), str(tmp_path / "certs"), "--host", "10.0.0.5"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    made = {p.name for p in (tmp_path / "certs").iterdir()}
    assert {Path(f).name for f in CERT_FILES} | {"ca-key.pem"} == made
    assert ((tmp_path / "certs" / "client-key.pem").stat().st_mode & 0o077) == 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr

    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(
        (tmp_path / "certs" / "scheduler.pem").read_bytes()
    )
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hosts = {str(v) for v in names.get_values_for_type(x509.IPAddress)}
    hosts |= set(names.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "10.0.0.5", "localhost", "scheduler", "diffsweep-scheduler"} <= hosts


# --------------------------------------------------------------------------- agreement


def test_one_image_everywhere() -> None:
    compose = _compose()
    images = {service.get("image") for service in compose["services"].values()}
    images |= {container["image"] for _where, container, _pod in _k8s_containers()}
    assert images == {IMAGE}
    for service in compose["services"].values():
        assert service["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
    assert IMAGE in (DOCKER / "Dockerfile").read_text()  # the documented `docker build -t`


def test_diffsweep_run_commands_use_real_options() -> None:
    from pipeline.cli.run import run

    known = _options(run)
    runs = [(where, args) for where, args in _all_commands() if args[:2] == ["diffsweep", "run"]]
    script = (DEPLOY / "slurm" / "run-sweep.sh").read_text()
    for line in script.splitlines():
        if line.strip().startswith("diffsweep run "):
            runs.append(("run-sweep.sh", shlex.split(line.replace("$resume", ""))))
    assert {where for where, _ in runs} == {"compose run", "Job", "run-sweep.sh"}
    for where, args in runs:
        unknown = set(_flags(args)) - known
        assert not unknown, f"{where}: diffsweep run has no {sorted(unknown)}"
        if where != "run-sweep.sh":
            assert _value(args, "-o").startswith("/data/"), where
            sweep = _value(args, "run")
            assert sweep.startswith("/opt/diffsweep/sweeps/")
            assert (ROOT / "sweeps" / Path(sweep).name).exists(), sweep


def test_diffsweep_plan_commands_use_real_options() -> None:
    from pipeline.cli.plan import plan

    known = _options(plan)
    script = (DEPLOY / "slurm" / "run-sweep.sh").read_text()
    lines = [
        shlex.split(line)
        for line in script.splitlines()
        if line.strip().startswith("diffsweep plan")
    ]
    assert lines
    assert "--cluster" in known
    for args in lines:
        assert set(_flags(args)) <= known


def test_dask_commands_use_real_options() -> None:
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    seen = set()
    for where, args in _all_commands():
        if args[0] != "dask":
            continue
        seen.add(args[1])
        command = {"scheduler": scheduler_cli, "worker": worker_cli}[args[1]]
        unknown = set(_flags(args)) - _options(command)
        unknown -= {"--name"} if "$(DASK_WORKER_NAME)" in args else set()
        assert not unknown, f"{where}: dask {args[1]} has no {sorted(unknown)}"
    assert seen == {"scheduler", "worker"}


def test_tls_everywhere_and_addresses_agree() -> None:
    compose_host = "scheduler"
    k8s_host = f"{_kubernetes()['DaskCluster']['metadata']['name']}-scheduler"  # operator naming
    assert k8s_host == "diffsweep-scheduler"
    for where, args in _all_commands():
        host = compose_host if where.startswith("compose") else k8s_host
        if args[:2] == ["dask", "scheduler"]:
            assert _value(args, "--protocol") == "tls", where
            assert int(_value(args, "--port")) == SCHEDULER_PORT, where
            assert _value(args, "--dashboard-address") == f":{DASHBOARD_PORT}", where
        addresses = [a for a in args if "://" in a]
        if args[:2] == ["dask", "worker"]:
            assert addresses == [f"tls://{host}:{SCHEDULER_PORT}"], where
        if args[:2] == ["diffsweep", "run"]:
            assert _value(args, "--scheduler") == f"tls://{host}:{SCHEDULER_PORT}", where
        role = {"scheduler": "scheduler", "worker": "worker", "run": "client"}[args[1]]
        assert _value(args, "--tls-ca-file") == "/certs/ca.pem", where
        assert _value(args, "--tls-cert") == f"/certs/{role}.pem", where
        assert _value(args, "--tls-key") == f"/certs/{role}-key.pem", where
        assert {a for a in args if a.startswith("/certs/")} <= CERT_FILES


def test_compose_ports_volumes_and_environment() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"scheduler", "worker", "run"}
    published = services["scheduler"]["ports"]
    assert published == [
        f"127.0.0.1:{SCHEDULER_PORT}:{SCHEDULER_PORT}",
        f"127.0.0.1:{DASHBOARD_PORT}:{DASHBOARD_PORT}",
    ]
    for name, service in services.items():
        if name != "scheduler":
            assert "ports" not in service, f"{name} must not publish ports"
        volumes = service["volumes"]
        assert "${DIFFSWEEP_DATA:-./data}:/data" in volumes
        assert "./certs:/certs:ro" in volumes
        assert service["environment"]["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
    assert str(services["worker"]["deploy"]["replicas"]).startswith("${DIFFSWEEP_WORKERS")
    assert services["run"]["profiles"] == ["run"]


def test_kubernetes_manifests_agree() -> None:
    manifests = _kubernetes()
    assert set(manifests) == {"DaskCluster", "PersistentVolumeClaim", "Job", "NetworkPolicy"}
    cluster = manifests["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    claim = manifests["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    claim_name = claim["metadata"]["name"]

    scheduler = cluster["spec"]["scheduler"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["spec"]["containers"][0]["ports"]}
    assert ports == {"tcp-comm": SCHEDULER_PORT, "http-dashboard": DASHBOARD_PORT}
    service = scheduler["service"]
    assert service["type"] == "ClusterIP"
    assert {p["port"] for p in service["ports"]} == {SCHEDULER_PORT, DASHBOARD_PORT}
    assert {p["targetPort"] for p in service["ports"]} == set(ports)
    assert service["selector"]["dask.org/cluster-name"] == cluster["metadata"]["name"]

    for where, container, pod in _k8s_containers():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert volumes[mounts["/certs"]["name"]]["secret"]["secretName"] == "diffsweep-tls"
        assert mounts["/certs"]["readOnly"] is True
        if where != "DaskCluster scheduler":
            claim_ref = volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]
            assert claim_ref["claimName"] == claim_name, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true", where

    policy = manifests["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == service["selector"]
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [SCHEDULER_PORT]
    job_labels = manifests["Job"]["spec"]["template"]["metadata"]["labels"]
    allowed = [
        peer["podSelector"]["matchLabels"] for rule in policy["ingress"] for peer in rule["from"]
    ]
    assert any(labels.items() <= job_labels.items() for labels in allowed)


def test_slurm_configuration_is_a_dask_config() -> None:
    config = _documents(DEPLOY / "slurm" / "jobqueue.yaml")[0]
    slurm = config["jobqueue"]["slurm"]
    assert slurm["processes"] == slurm["cores"], "one single-threaded worker per core"
    assert "--lifetime" in slurm["worker-extra-args"]
    assert slurm["scheduler-options"]["dashboard_address"].startswith("127.0.0.1:")
