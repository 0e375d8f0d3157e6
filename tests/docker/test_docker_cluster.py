"""docker/ proven as a user runs it: the image built from docker/Dockerfile, a head and two
workers started with the commands of docker/docker-compose.yml, a job submitted with
`ray job submit`, its output checked, and exactly the started containers removed.

Docker Hub is not reachable here, so the test builds its own base image from Debian's
packages (debootstrap, then a venv on PATH, as python:slim has) and passes it as the
Dockerfile's BASE_IMAGE; the default build users get is unchanged.

The three containers share one network namespace that holds only a loopback interface (the
head's `--network=none`, joined by the workers), every Ray port on 127.0.0.1 and distinct
per node: nothing can talk to any other address. Not the host's network: there, `ray start`
on a worker replaces `--node-ip-address=127.0.0.1` with the host's network address (only
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 stops that, and with it a worker refuses to join); in a
namespace without a route out, Ray's own address lookup finds 127.0.0.1. So the job is
submitted from inside that namespace, with the image's `ray job submit`.

Run it with `pytest -m docker` (.ci/run does): it needs a running Docker daemon and, on the
first run, root and debootstrap (the base image is kept, by tag).
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from hypernodes_daft._local_only import SETTINGS

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
BASE = "hypernodes-daft-test/python-base:bookworm"
IMAGE = "hypernodes-daft-test/ray:latest"
MIRROR = "http://deb.debian.org/debian"
ROWS = 60
UP_WITHIN = 180  # seconds for the three nodes to join; then the logs are printed


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {shlex.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip()


@pytest.fixture(scope="module", autouse=True)
def daemon() -> None:
    # Asked for with -m docker: a missing Docker is a failure, never a quiet skip.
    if shutil.which("docker") is None:
        pytest.fail("no docker client (.ci/run installs docker.io)")
    try:
        docker("info", timeout=20)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"no Docker daemon answers ({error}); .ci/run starts one")


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30) != "[]" and bool(
        docker("images", "-q", tag, timeout=30)
    )


def build_base(workdir: Path) -> None:
    """Debian bookworm with Python 3.11 from Debian's packages, a venv first on PATH (so
    `pip` and `python` are what python:slim gives) and pip told to trust this host's CA."""
    if image_exists(BASE):
        return
    rootfs = workdir / "rootfs"
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            MIRROR,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", f"{BASE}-rootfs"], stdin=tar.stdout, check=True)
    tar.wait()
    context = workdir / "base"
    context.mkdir()
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", context / "host-ca.crt")
    (context / "Dockerfile").write_text(
        f"FROM {BASE}-rootfs\n"
        "COPY host-ca.crt /etc/ssl/certs/host-ca.crt\n"
        "RUN python3 -m venv /opt/venv\n"
        "ENV PATH=/opt/venv/bin:$PATH PIP_CERT=/etc/ssl/certs/host-ca.crt\n"
    )
    docker("build", "--network", "host", "-t", BASE, str(context), timeout=600)


def compose_service(service: str) -> dict:
    return yaml.safe_load((REPO / "docker" / "docker-compose.yml").read_text())["services"][service]


def compose_command(service: str) -> list[str]:
    return list(compose_service(service)["command"])


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def on_loopback(command: list[str], ports: dict[str, int], workers: range) -> list[str]:
    """A compose command for a shared loopback: every port of the node on 127.0.0.1 and its
    own (Ray nodes sharing one network namespace must not share a port)."""
    forced = {
        "--node-ip-address": "127.0.0.1",
        "--num-cpus": 1,  # compose's ${HEAD_CPUS:-1} / ${WORKER_CPUS:-2}, fixed for the test
        "--node-manager-port": ports["node_manager"],
        "--object-manager-port": ports["object_manager"],
        "--dashboard-agent-listen-port": ports["agent"],
        "--dashboard-agent-grpc-port": ports["agent_grpc"],
        "--runtime-env-agent-port": ports["runtime_env"],
        "--metrics-export-port": ports["metrics"],
        "--min-worker-port": workers.start,
        "--max-worker-port": workers.stop - 1,
    }
    if "--head" in command:
        forced.update(
            {
                "--port": ports["gcs"],
                "--dashboard-host": "127.0.0.1",
                "--dashboard-port": ports["dashboard"],
                "--ray-client-server-port": ports["client"],
            }
        )
    else:
        forced["--address"] = f"127.0.0.1:{ports['gcs_of_head']}"
    kept = [arg for arg in command if arg.partition("=")[0] not in forced and arg != "--block"]
    return [*kept, *(f"{flag}={value}" for flag, value in forced.items()), "--block"]


class Cluster:
    """The head and workers of the compose file, as containers sharing the head's loopback."""

    def __init__(self, data: Path):
        self.data = data
        self.started: list[str] = []  # container ids, to remove exactly these
        names = ["gcs", "client", "dashboard"] + [
            f"{role}{i}"
            for i in range(3)
            for role in (
                "agent",
                "node_manager",
                "object_manager",
                "agent_grpc",
                "runtime_env",
                "metrics",
            )
        ]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.node_of_port: dict[int, str] = {}

    def node_ports(self, i: int) -> dict[str, int]:
        roles = ("agent", "node_manager", "object_manager", "agent_grpc", "runtime_env", "metrics")
        ports = {role: self.ports[f"{role}{i}"] for role in roles}
        if i == 0:
            ports.update(gcs=self.ports["gcs"], client=self.ports["client"])
            ports["dashboard"] = self.ports["dashboard"]
        else:
            ports["gcs_of_head"] = self.ports["gcs"]
        return ports

    def start(self, services: tuple[str, ...] = ("head", "worker", "worker")) -> None:
        # As the image has them, less the one that makes a worker refuse to join (the nodes
        # stay on 127.0.0.1 because their namespace has no other address).
        kept_out = {"HOME", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        environment = [f"-e{k}={v}" for k, v in SETTINGS.items() if k not in kept_out]
        for i, service in enumerate(services):
            workers = range(20000 + 1000 * i, 20000 + 1000 * i + 200)
            command = on_loopback(compose_command(service), self.node_ports(i), workers)
            container = docker(
                "run",
                "-d",
                f"--network={'none' if i == 0 else 'container:' + self.started[0]}",
                f"--shm-size={compose_service(service)['shm_size']}",
                f"--volume={self.data}:/data",
                *environment,
                IMAGE,
                *command,
            )
            self.started.append(container)
            self.node_of_port[self.node_ports(i)["node_manager"]] = f"{service}-{i}"

    def alive_nodes(self) -> list[dict]:
        script = (
            "import json, ray; ray.init(address='auto', logging_level='ERROR');"
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
        )
        out = docker("exec", self.started[0], "python", "-c", script, check=False, timeout=60)
        lines = out.splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("[") else []

    def wait_for(self, n: int, within: float = UP_WITHIN) -> list[dict]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            nodes = self.alive_nodes()
            if len(nodes) >= n:
                return nodes
            time.sleep(3)
        raise AssertionError(f"the cluster did not reach {n} nodes in {within} s\n{self.logs()}")

    def submit(self, *entrypoint: str) -> subprocess.CompletedProcess:
        """`ray job submit` to the head's job API, from inside the cluster's namespace."""
        address = f"http://127.0.0.1:{self.ports['dashboard']}"
        submit = ["ray", "job", "submit", f"--address={address}", "--", *entrypoint]
        return subprocess.run(
            ["docker", "exec", self.started[0], *submit],
            capture_output=True,
            text=True,
            timeout=600,
        )

    def logs(self) -> str:
        parts = []
        for container in self.started:
            done = subprocess.run(
                ["docker", "logs", "--tail", "60", container], capture_output=True, text=True
            )
            parts.append(f"--- {container[:12]}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def remove(self) -> None:
        for container in reversed(self.started):  # the head's namespace last
            docker("rm", "-f", container, check=False, timeout=60)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    build_base(tmp_path_factory.mktemp("base"))
    docker(
        "build",
        "--network=host",
        f"--build-arg=BASE_IMAGE={BASE}",
        "-f",
        str(REPO / "docker" / "Dockerfile"),
        "-t",
        IMAGE,
        str(REPO),
        timeout=1500,
    )
    return IMAGE


@pytest.fixture
def cluster(image, tmp_path) -> Iterator[Cluster]:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user (uid 1000) writes the output here
    started = Cluster(data)
    try:
        started.start()
        yield started
    finally:
        started.remove()
        left = docker("ps", "-aq", "--no-trunc", check=False)
        assert not set(started.started) & set(left.split()), "a container was left behind"


def test_a_submitted_job_runs_on_the_cluster_and_writes_every_row(cluster):
    nodes = cluster.wait_for(3)
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}

    pq.write_table(pa.table({"x": list(range(ROWS))}), cluster.data / "input.parquet")
    (cluster.data / "input").mkdir()
    (cluster.data / "input.parquet").rename(cluster.data / "input" / "part-0.parquet")
    shutil.copy(REPO / "tests" / "docker" / "job.py", cluster.data / "job.py")
    submitted = cluster.submit("python", "/data/job.py")
    assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{cluster.logs()}"
    assert "succeeded" in submitted.stdout

    table = pq.read_table(cluster.data / "output").to_pydict()
    assert sorted(table["x"]) == list(range(ROWS))
    assert sorted(table["squared"]) == sorted(x * x for x in range(ROWS))
    node_ids = {n["NodeID"]: n["NodeManagerPort"] for n in nodes}
    rows_per_node = Counter(cluster.node_of_port[node_ids[node]] for node in table["ray_node"])
    print(f"rows per container: {dict(rows_per_node)}")
    assert len(rows_per_node) >= 2, f"every row ran on {rows_per_node}"


def test_a_cluster_that_does_not_come_up_fails_in_bounded_time_with_the_logs(image, tmp_path):
    head_only = Cluster(tmp_path)
    try:
        head_only.start(services=("head",))
        started = time.monotonic()
        with pytest.raises(AssertionError) as failed:
            head_only.wait_for(3, within=20)
        assert time.monotonic() - started < 20 + 60  # one last probe may take its timeout
    finally:
        head_only.remove()
    assert "did not reach 3 nodes in 20 s" in str(failed.value)
    assert "Ray runtime started" in str(failed.value)  # the head's log, printed
