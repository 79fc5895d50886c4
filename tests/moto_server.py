"""moto's real server process (``moto.server.main``, through ``moto_shims.py``, which gives what moto
lacks AWS's meaning: Lambda function URLs per alias) for tests that talk to AWS APIs over HTTP.

``moto_server()`` starts it on a free loopback port and yields its endpoint URL; ``client`` makes a
boto3 client for it with fixed test credentials (passed explicitly, ``os.environ`` is left alone);
``create_table`` makes a DynamoDB table from a spec shaped like ``infra/resources.toml``'s tables
(the contract suite's ``CONTRACT_TABLES``); ``push_image`` and ``set_scan_result`` put an image
manifest in an ECR repository and say what moto answers for its scan.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx

ACCOUNT = "123456789012"
"""moto's account id (in ARNs and ECR registry hosts)."""

CREDENTIALS: dict[str, str] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}
"""What boto3 clients of the moto server are made with."""

SHIMS = Path(__file__).with_name("moto_shims.py")
"""The server's entry point: ``moto.server.main`` with what moto lacks given AWS's meaning."""
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
_BIND_ATTEMPTS = 3


class _BindFailed(RuntimeError):
    """The port picked was taken before the server could bind it."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(log: Any) -> tuple[subprocess.Popen[bytes], str]:
    """One attempt: the server on a fresh port, once ``GET /moto-api/`` answers."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log.seek(0)
    log.truncate()
    proc = subprocess.Popen(
        [sys.executable, "-P", str(SHIMS), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            if "already in use" in output or "Errno 98" in output:
                raise _BindFailed(output)
            raise RuntimeError(f"moto_server exited with code {proc.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1.0):  # noqa: S310 (loopback)
                return proc, endpoint
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            _stop(proc)
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(
                f"moto_server did not answer on {endpoint} within {START_TIMEOUT_S:g}s:\n{output}"
            )
        time.sleep(0.1)


@contextmanager
def moto_server() -> Iterator[str]:
    """A running ``moto_server`` on 127.0.0.1 and a free port: yields ``http://127.0.0.1:PORT``.

    Its output goes to a temporary file (a pipe would fill with its request log and stall it) and
    is shown if it fails to start; a port taken between picking and binding is retried, up to 3
    attempts. On exit the process is terminated, killed after 5 s.
    """
    with tempfile.TemporaryFile() as log:
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            try:
                proc, endpoint = _start(log)
                break
            except _BindFailed:
                if attempt == _BIND_ATTEMPTS:
                    raise
        try:
            yield endpoint
        finally:
            _stop(proc)


def client(endpoint: str, service: str = "dynamodb") -> Any:
    """A boto3 low-level client of ``service`` on the moto server at ``endpoint``."""
    make: Any = boto3.client  # the stubs know each service by its literal name only
    return make(service, endpoint_url=endpoint, **CREDENTIALS)


def create_table(dynamodb: Any, name: str, spec: Mapping[str, Any]) -> None:
    """Create DynamoDB table ``name`` (on demand) from ``spec``: ``attributes`` (name to ``S``/``N``),
    ``partition_key``, ``sort_key`` and ``indexes`` (each ``name``, ``partition_key``, ``sort_key``;
    projection ALL), and wait until it is active.

    Only the key attributes are declared (DynamoDB refuses attribute definitions no key uses).
    """
    types: Mapping[str, str] = spec["attributes"]

    def schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
        keys = [{"AttributeName": partition_key, "KeyType": "HASH"}]
        if sort_key:
            keys.append({"AttributeName": sort_key, "KeyType": "RANGE"})
        return keys

    key_schema = schema(spec["partition_key"], spec.get("sort_key"))
    indexes = [
        {
            "IndexName": index["name"],
            "KeySchema": schema(index["partition_key"], index.get("sort_key")),
            "Projection": {"ProjectionType": "ALL"},
        }
        for index in spec.get("indexes", [])
    ]
    used = dict.fromkeys(
        k["AttributeName"] for s in [key_schema, *(i["KeySchema"] for i in indexes)] for k in s
    )
    params: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": types[a]} for a in used],
        "KeySchema": key_schema,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        params["GlobalSecondaryIndexes"] = indexes
    dynamodb.create_table(**params)
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def push_image(endpoint: str, repository: str, tag: str = "v1") -> str:
    """An image manifest in ECR ``repository`` (created), as a reference by digest."""
    ecr = client(endpoint, "ecr")
    ecr.create_repository(repositoryName=repository)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7,
                "digest": "sha256:" + "c" * 64,
            },
            "layers": [],
            "tag": tag,
        }
    )
    answer: dict[str, Any] = ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)
    digest = answer["image"]["imageId"]["imageDigest"]
    assert digest.startswith("sha256:") and len(digest) == 71  # moto's own digest of what it holds
    return f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{repository}@{digest}"


def set_scan_result(endpoint: str, image: str, status: str, findings: Mapping[str, Any]) -> None:
    """What moto's DescribeImageScanFindings answers for ``image`` (a reference by digest, as
    ``push_image`` returns it): ``status``, described as ``moto says STATUS``, and ``findings``."""
    path, digest = image.split("@")
    result = {
        "registryId": ACCOUNT,
        "repositoryName": path.split("/", 1)[1],
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": status, "description": f"moto says {status}"},
        "imageScanFindings": dict(findings),
    }
    httpx.post(
        f"{endpoint}/moto-api/static/ecr/scan-finding-results",
        json={"results": [result], "region": "us-east-1"},
    ).raise_for_status()
