"""docker/: the compose file and the Dockerfile, checked by parsing them (no Docker engine
is needed), and the Dockerfile's install command resolved by pip against this repository."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hypernodes_daft._local_only import SETTINGS

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
SRC = "/src"  # where the Dockerfile copies the project

# -- reading the files -------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def arguments_of(keyword: str) -> list[str]:
    return [arguments for k, arguments in dockerfile() if k == keyword]


def build_args() -> dict[str, str]:
    """ARG defaults, as the build substitutes them when no --build-arg is given."""
    return dict(a.split("=", 1) for a in arguments_of("ARG") if "=" in a)


def pip_install_arguments() -> list[str]:
    """The requirements of the Dockerfile's one `pip install`, ARG defaults substituted."""
    installs = [
        shlex.split(command)[2:]
        for command in arguments_of("RUN")
        if shlex.split(command)[:2] == ["pip", "install"]
    ]
    assert len(installs) == 1, f"expected one `pip install` RUN line, found {installs}"
    defaults = build_args()
    return [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], arg) for arg in installs[0]]


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def service(name: str) -> dict:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no {name!r} service: {sorted(services)}"
    return services[name]


def command(name: str) -> list[str]:
    cmd = service(name)["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def option(cmd: list[str], flag: str) -> str | None:
    """The value of `--flag=value` or `--flag value` in a command, else None."""
    for i, arg in enumerate(cmd):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def published(name: str) -> dict[int, str]:
    """Container port -> host IP it is published on ('' for every interface)."""
    ports = {}
    for port in service(name).get("ports", []):
        if isinstance(port, dict):  # long syntax
            ports[int(port["target"])] = port.get("host_ip", "")
            continue
        parts = str(port).split("/")[0].split(":")
        ports[int(parts[-1])] = parts[0] if len(parts) == 3 else ""
    return ports


def mounts(name: str) -> dict[str, str]:
    """Container path -> volume (or host path) mounted there."""
    found = {}
    for volume in service(name).get("volumes", []):
        if isinstance(volume, dict):  # long syntax
            found[volume["target"]] = volume["source"]
        else:
            source, target = str(volume).split(":")[:2]
            found[target] = source
    return found


# -- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_a_head_and_a_worker_service():
    assert "--head" in command("head")
    assert "--head" not in command("worker")
    for name in ("head", "worker"):
        cmd = command(name)
        assert cmd[:2] == ["ray", "start"], cmd
        assert "--block" in cmd, f"{name}: without --block the container exits at once"
        assert option(cmd, "--num-cpus"), f"{name}: Ray would claim every core of the host"


def test_worker_joins_the_heads_gcs_port():
    gcs_port = option(command("head"), "--port")
    assert gcs_port, "the head's GCS port is not set"
    assert option(command("worker"), "--address") == f"head:{gcs_port}"


def test_head_publishes_the_dashboard_and_ray_client_on_loopback_only():
    ports = published("head")
    assert 8265 in ports, "ray job submit talks to the dashboard port 8265"
    assert option(command("head"), "--dashboard-host") == "0.0.0.0"  # reachable from outside
    client_port = int(option(command("head"), "--ray-client-server-port") or 10001)
    assert client_port in ports, "Ray Client (ray://localhost:10001) needs its port published"
    # Ray has no authentication: nothing may be published on every interface of the host.
    assert set(ports.values()) == {"127.0.0.1"}, ports


def test_workers_can_be_scaled():
    worker = service("worker")
    assert "container_name" not in worker  # a fixed name allows one container
    assert not published("worker")  # fixed host ports would clash between replicas


def test_shared_volume_is_mounted_at_the_same_path_on_every_node():
    head, worker = mounts("head"), mounts("worker")
    assert head, "the head mounts no shared volume"
    assert head == worker
    declared = compose().get("volumes") or {}
    for source in head.values():
        assert source in declared, f"volume {source!r} is not declared at the top level"


def test_workers_wait_for_a_healthy_head():
    depends = service("worker")["depends_on"]
    assert depends["head"]["condition"] == "service_healthy"
    check = " ".join(service("head")["healthcheck"]["test"])
    assert ":8265/" in check  # the dashboard, which answers once it sees GCS
    # and the head's job agent: until it is up, `ray job submit` fails ("No available agent")
    agent_port = option(command("head"), "--dashboard-agent-listen-port")
    assert agent_port and f":{agent_port}/" in check


def test_compose_builds_the_dockerfile_from_the_repository_root():
    for name in ("head", "worker"):
        build = service(name)["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert service("head")["image"] == service("worker")["image"]


# -- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_installs_the_repository_with_the_ray_extra():
    requirements = pip_install_arguments()
    assert f"{SRC}[ray]" in requirements, requirements


def test_dockerfile_builds_on_python_slim_unless_given_another_base():
    """tests/docker builds on its own base (Docker Hub is out of reach there) through
    BASE_IMAGE; what a user's default build starts from stays python:3.11-slim."""
    defaults = build_args()
    assert arguments_of("FROM") == ["${BASE_IMAGE}"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], defaults["BASE_IMAGE"])
    assert base == "python:3.11-slim"


def test_dockerfile_copies_what_the_package_build_needs():
    copied = set()
    for arguments in arguments_of("COPY"):
        *sources, destination = shlex.split(arguments)
        assert destination.rstrip("/").startswith(SRC), arguments
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the build context"
            copied.add(source)
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert needed <= copied, f"missing from COPY: {needed - copied}"


def test_dockerfile_keeps_daft_and_ray_local_and_runs_as_a_user():
    env = {}
    for arguments in arguments_of("ENV"):
        env.update(token.split("=", 1) for token in shlex.split(arguments))
    for key, value in SETTINGS.items():
        if key == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER":
            # pins a node to 127.0.0.1: the other containers could not reach it
            assert key not in env
        else:
            assert env.get(key) == value, key
    users = arguments_of("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # without ~/ray_bootstrap_config.yaml Ray's head probes the cloud metadata address
    assert any("ray_bootstrap_config.yaml" in run for run in arguments_of("RUN"))
    exposed = {int(p) for arguments in arguments_of("EXPOSE") for p in arguments.split()}
    assert {6379, 8265, 10001} <= exposed


def test_dockerfile_install_command_resolves(tmp_path):
    """The Dockerfile's `pip install`, with the repository in place of its copy, resolved
    from scratch by pip (--ignore-installed: as in a fresh image) without installing."""
    requirements = [arg.replace(SRC, str(REPO), 1) for arg in pip_install_arguments()]
    report = tmp_path / "report.json"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), *requirements],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-4000:]
    resolved = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "hypernodes-daft" in resolved
    assert resolved.get("ray") == build_args()["RAY_VERSION"], resolved.get("ray")
    assert "daft" in resolved
    print(f"pip resolved {len(resolved)} distributions in {elapsed:.1f} s")
