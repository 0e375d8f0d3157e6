"""A real S3-compatible server on 127.0.0.1 for the object-storage cache tests and
benchmarks/cache.py: moto's server mode, in a subprocess (its own GIL).

    server = S3Server.start()              # auth=True: requests need real IAM keys
    server.create_bucket("cache-tests")
    server.environment                     # AWS_ENDPOINT_URL and test credentials
    server.stop()                          # the subprocess, and nothing else

`python tests/_s3_server.py` runs one in the foreground and prints its URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

HOST = "127.0.0.1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, auth: bool = False, timeout: float = 60.0) -> S3Server:
        """A new server on a free port; with `auth`, every request after the first (the
        bucket's creation) is checked against moto's IAM, which knows no key: denied."""
        port = _free_port()
        env = {**os.environ, "MOTO_PORT": str(port)}
        if auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "1"
        command = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        server = cls(process, f"http://{HOST}:{port}")
        server._wait(timeout)
        return server

    @property
    def environment(self) -> dict[str, str]:
        """The AWS variables that point a client at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": "us-east-1", **CREDENTIALS}

    @property
    def options(self) -> dict[str, str]:
        """The same, as DiskCache's `storage_options` (pyarrow's S3FileSystem arguments)."""
        return {
            "endpoint_override": self.url,
            "region": "us-east-1",
            "access_key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the S3 server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the S3 server did not answer on {self.url} within {timeout} s")


def _die_with_parent() -> None:
    """In the child, on Linux: the kernel stops the server when its parent dies, even by
    SIGKILL, so no server outlives the session or script that started it."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    running = S3Server.start()
    print(running.url, flush=True)
    try:
        running.process.wait()
    except KeyboardInterrupt:
        running.stop()
