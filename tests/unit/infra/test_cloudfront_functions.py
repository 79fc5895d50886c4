"""The widget distribution's CloudFront Functions (infra/mangaassist_infra/functions), run in node
with CloudFront's event shape: what a request's URI becomes and which headers a response carries."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

FUNCTIONS = Path(__file__).resolve().parents[3] / "infra" / "mangaassist_infra" / "functions"
NODE = shutil.which("node")


def _run(file: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert NODE, "node is installed by make setup (the CDK app runs on it)"
    code = (FUNCTIONS / file).read_text()
    script = (
        code
        + "\nconst events = JSON.parse(process.argv[1]);\n"
        + ("console.log(JSON.stringify(events.map(e => handler(e))));\n")
    )
    out = subprocess.run(
        [NODE, "-e", script, json.dumps(events)], capture_output=True, text=True, timeout=30, check=True
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


def _request(uri: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "uri": uri, "headers": {}, "querystring": {}}}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/previews/feat-cart/assets/widget-abc123.js", "/assets/widget-abc123.js"),
        ("/previews/v1.2_x/assets/css/widget-1.css", "/assets/css/widget-1.css"),
        ("/previews/feat-cart/", "/previews/feat-cart/index.html"),
        ("/previews/feat-cart/loader.js", "/previews/feat-cart/loader.js"),
        ("/assets/react-1.js", "/assets/react-1.js"),
        ("/loader.js", "/loader.js"),
        ("/", "/index.html"),
        # not a branch slug, or a path that climbs: left alone (S3 answers 403/404)
        ("/previews/../assets/x.js", "/previews/../assets/x.js"),
        ("/previews/a/assets/../../secrets", "/previews/a/assets/../../secrets"),
        ("/previews//assets/x.js", "/previews//assets/x.js"),
    ],
)
def test_viewer_request_maps_preview_assets_to_the_shared_assets(uri: str, expected: str) -> None:
    [request] = _run("site_request.js", [_request(uri)])
    assert request["uri"] == expected


def test_viewer_response_names_the_release_and_drops_the_metadata() -> None:
    entry = {
        "request": {"uri": "/index.html"},
        "response": {
            "statusCode": 200,
            "headers": {
                "x-amz-meta-release": {"value": "r-0123456789ab"},
                "x-amz-meta-sha256": {"value": "f" * 64},
                "cache-control": {"value": "no-cache"},
            },
        },
    }
    asset = {
        "request": {"uri": "/assets/react-1.js"},
        "response": {"statusCode": 200, "headers": {"cache-control": {"value": "immutable"}}},
    }
    first, second = _run("site_response.js", [entry, asset])
    assert first["headers"] == {
        "x-mangaassist-release": {"value": "r-0123456789ab"},
        "cache-control": {"value": "no-cache"},
    }
    assert second["headers"] == {"cache-control": {"value": "immutable"}}
