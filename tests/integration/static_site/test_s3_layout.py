"""``S3StaticSite`` on moto's server: what the bucket holds after each step, and CloudFront's
invalidations (what the distribution serves, which the contract suite cannot see)."""

from __future__ import annotations

from typing import Any

import pytest

from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.static_site_s3 import S3StaticSite
from mangaassist.platform.static_site import StaticSiteError
from tests.integration.static_site.conftest import ENV, release


def _body(site: S3StaticSite, key: str) -> bytes:
    data: bytes = site.s3.get_object(Bucket=site.bucket, Key=key)["Body"].read()
    return data


def _keys(site: S3StaticSite, prefix: str = "") -> set[str]:
    page: dict[str, Any] = site.s3.list_objects_v2(Bucket=site.bucket, Prefix=prefix)
    return {o["Key"] for o in page.get("Contents", [])}


def test_assets_are_immutable_objects_and_entry_files_are_copied_to_the_channel_after_them(
    s3_site: S3StaticSite,
) -> None:
    site = s3_site
    r1 = site.upload(release(1)).release_id
    assert _keys(site) == {
        "assets/app-0001.js",
        "assets/vendor-7f3a.js",
        f"releases/{r1}/index.html",
        f"releases/{r1}/loader.js",
        f"releases/{r1}/manifest.json",
        f"releases/{r1}.json",
    }  # nothing at the root until the channel points at it
    asset = site.s3.head_object(Bucket=site.bucket, Key="assets/app-0001.js")
    assert asset["CacheControl"] == "public, max-age=31536000, immutable"
    assert asset["ContentType"] == "application/javascript" and len(asset["Metadata"]["sha256"]) == 64

    site.point(ENV, r1, reason="deploy 1")
    assert _body(site, "index.html") == release(1)["index.html"]
    root = site.s3.head_object(Bucket=site.bucket, Key="loader.js")
    assert root["CacheControl"] == "no-cache" and root["Metadata"]["release"] == r1
    assert root["ContentType"] == "application/javascript"

    # release 2 has no manifest.json: release 1's leaves the root once release 2's files are there
    files = {k: v for k, v in release(2).items() if k != "manifest.json"}
    r2 = site.upload(files).release_id
    site.point(ENV, r2, reason="deploy 2")
    assert _body(site, "index.html") == release(2)["index.html"]
    assert "manifest.json" not in _keys(site) and "assets/app-0001.js" in _keys(site, "assets/")

    site.point("preview/feat-login", r1, reason="pr 12")
    assert _body(site, "previews/feat-login/index.html") == release(1)["index.html"]
    assert _body(site, "index.html") == release(2)["index.html"]
    assert site.delete_preview("feat-login") is True
    assert _keys(site, "previews/") == set()


def test_point_refuses_a_release_whose_assets_are_not_all_stored(s3_site: S3StaticSite) -> None:
    site = s3_site
    r1 = site.upload(release(1)).release_id
    site.point(ENV, r1, reason="deploy 1")
    r2 = site.upload(release(2)).release_id
    site.s3.delete_object(Bucket=site.bucket, Key="assets/app-0002.js")  # an interrupted upload
    with pytest.raises(StaticSiteError, match=r"lacks stored assets: assets/app-0002\.js"):
        site.point(ENV, r2, reason="deploy 2")
    assert site.current(ENV) == r1 and _body(site, "index.html") == release(1)["index.html"]


def test_invalidate_sends_exactly_the_paths_given_to_cloudfront(s3_site: S3StaticSite) -> None:
    site = s3_site
    made = site.invalidate(ENV, ["/index.html", "/loader.js"])
    sent = site.cloudfront.get_invalidation(DistributionId=site.distribution_id, Id=made.id)
    assert sent["Invalidation"]["InvalidationBatch"]["Paths"]["Items"] == ["/index.html", "/loader.js"]
    preview = site.invalidate("preview/feat-login", ["/index.html"])
    sent = site.cloudfront.get_invalidation(DistributionId=site.distribution_id, Id=preview.id)
    assert sent["Invalidation"]["InvalidationBatch"]["Paths"]["Items"] == ["/previews/feat-login/index.html"]
    listed = site.cloudfront.list_invalidations(DistributionId=site.distribution_id)["InvalidationList"]
    assert {i["Id"] for i in listed["Items"]} == {made.id, preview.id}


def test_url_is_the_distributions_domain(s3_site: S3StaticSite) -> None:
    domain = s3_site.cloudfront.get_distribution(Id=s3_site.distribution_id)["Distribution"]["DomainName"]
    assert s3_site.url(ENV) == f"https://{domain}/"
    assert s3_site.url("preview/feat-login") == f"https://{domain}/previews/feat-login/"


def test_a_missing_bucket_is_named(s3_site: S3StaticSite) -> None:
    gone = S3StaticSite(
        s3_site.s3, s3_site.cloudfront, bucket="mangaassist-nope-widget", distribution_id="X", environment=ENV
    )
    with pytest.raises(ConfigError, match="bucket mangaassist-nope-widget does not exist"):
        gone.upload(release(1))
