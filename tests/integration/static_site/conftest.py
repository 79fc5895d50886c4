"""The providers of ``platform.static_site.StaticSite`` the contract suite runs against, and the
helpers of the edge tests.

``local``: ``LocalStaticSite`` in a temporary directory. ``s3``: ``S3StaticSite`` on moto's server
process (one for the session), each test with its own bucket and CloudFront distribution, and no
gc grace period (moto's objects are seconds old). Both serve environment ``dev``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from mangaassist.platform.aws.static_site_s3 import S3StaticSite
from mangaassist.platform.local.static_site import LocalStaticSite
from mangaassist.platform.static_site import StaticSite
from tests.moto_server import client, moto_server

ENV = "dev"


def release(
    n: int, *, shared: bytes = b"export const vendor = 1;", extra: dict[str, bytes] | None = None
) -> dict[str, bytes]:
    """A widget release: entry files naming release ``n``, its own chunk, a vendor chunk every
    release shares, and ``extra`` files."""
    return {
        "index.html": f"<!doctype html><title>release {n}</title><script src=loader.js></script>".encode(),
        "loader.js": f"import('./assets/app-{n:04d}.js') // {n}".encode(),
        "manifest.json": f'{{"release": {n}, "entry": "assets/app-{n:04d}.js"}}'.encode(),
        f"assets/app-{n:04d}.js": f"export const release = {n};".encode(),
        "assets/vendor-7f3a.js": shared,
        **(extra or {}),
    }


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One ``moto_server`` process for the session: its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_clients(moto_endpoint: str) -> Iterator[tuple[Any, Any]]:
    s3, cloudfront = client(moto_endpoint, "s3"), client(moto_endpoint, "cloudfront")
    yield s3, cloudfront
    s3.close()
    cloudfront.close()


def make_distribution(cloudfront: Any, bucket: str) -> str:
    """A CloudFront distribution in front of ``bucket`` (moto): its id."""
    made = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": uuid4().hex,
            "Comment": f"{bucket} (contract test)",
            "Enabled": True,
            "DefaultRootObject": "index.html",
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "site",
                        "DomainName": f"{bucket}.s3.amazonaws.com",
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "site",
                "ViewerProtocolPolicy": "redirect-to-https",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
        }
    )
    return str(made["Distribution"]["Id"])


@pytest.fixture
def s3_site(aws_clients: tuple[Any, Any]) -> S3StaticSite:
    s3, cloudfront = aws_clients
    bucket = f"mangaassist-test-{uuid4().hex[:10]}-widget"
    s3.create_bucket(Bucket=bucket)
    return S3StaticSite(
        s3,
        cloudfront,
        bucket=bucket,
        distribution_id=make_distribution(cloudfront, bucket),
        environment=ENV,
        gc_grace_s=0.0,
    )


@pytest.fixture
def local_site(tmp_path: Path) -> Iterator[LocalStaticSite]:
    site = LocalStaticSite(tmp_path / "sites" / "widget", environment=ENV, base_url="http://127.0.0.1:8082")
    yield site
    site.close()


@pytest.fixture(params=["local", "s3"])
def site(request: pytest.FixtureRequest) -> StaticSite:
    return request.getfixturevalue("local_site" if request.param == "local" else "s3_site")  # type: ignore[no-any-return]
