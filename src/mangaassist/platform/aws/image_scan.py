"""``ImageScanner`` on Amazon ECR: the scan findings of one image, by digest (CD-01's ``scan`` gate).

* The image is a reference by digest, ``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO@sha256:HEX``
  (``parse_image_ref``; a tag beside the digest is allowed and ignored). Anything else is a
  ``ConfigError`` naming the value: a tag alone is refused, because a tag may be moved and the gate
  must judge the exact bytes that will run. The reference's region must be the client's.
* Findings: ``DescribeImageScanFindings`` with ``imageId.imageDigest`` and the reference's account
  as ``registryId``, every page (``nextToken``; ``findingSeverityCounts`` is on the first). Basic
  scanning lists ``findings`` (severity, ``uri``, the package in ``attributes``
  ``package_name``/``package_version``); enhanced scanning (Amazon Inspector) lists
  ``enhancedFindings`` (``packageVulnerabilityDetails``: ``vulnerabilityId``, ``sourceUrl``,
  ``vulnerablePackages``; a ``score``) and counts ``UNTRIAGED`` findings too.
* Status: ``COMPLETE`` (basic; enhanced's first scan) and ``ACTIVE`` (enhanced, scanned
  continuously) give the findings; ``IN_PROGRESS`` and ``PENDING`` are polled every ``poll_s``
  until ``timeout_s`` (each look reported through ``progress``), then ``ImageScanError``;
  ``FAILED``, ``UNSUPPORTED_IMAGE``, ``SCAN_ELIGIBILITY_EXPIRED``, ``FINDINGS_UNAVAILABLE``,
  ``LIMIT_EXCEEDED``, ``IMAGE_ARCHIVED``, ``IMAGE_SIZE_EXCEEDED`` (and a status botocore does not
  know) are ``ImageScanError`` with ECR's description.
* ``ScanNotFoundException``: the image was never scanned (a repository with basic scanning and
  scan on push off, or an image pushed before it was turned on): ``StartImageScan`` once, then the
  findings are polled as above. A registry on enhanced scanning refuses a manual scan
  (``ValidationException``): Inspector scans pushed images by itself, so the findings are polled
  until it has. A missing repository or image is ``NotFoundError``.

Made by ``platform.factory.Platform.image_scanner`` with the environment's ECR client, so a dry
run records the calls (``DescribeImageScanFindings`` is a read; ``StartImageScan`` a change it does
not make, after which the same read repeated ends the plan at a wait) and ``endpoint_url`` (a moto
server) applies.

Status: tested against moto's server (``put_image``, a scan started, findings configured through
moto's API) and botocore's ``Stubber`` (waiting, pages, enhanced findings, failures), in
``tests/unit/platform/test_image_scan.py``; never against a real registry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.image_scan import (
    SEVERITIES,
    WORST_SHOWN,
    Finding,
    ImageScanError,
    Progress,
    ScanReport,
    severity_rank,
)

DONE = frozenset({"COMPLETE", "ACTIVE"})
"""Statuses whose findings are the image's."""
WAITING = frozenset({"IN_PROGRESS", "PENDING"})
"""Statuses that are polled until they change (or the timeout)."""
FAILED = frozenset(
    {
        "FAILED",
        "UNSUPPORTED_IMAGE",
        "SCAN_ELIGIBILITY_EXPIRED",
        "FINDINGS_UNAVAILABLE",
        "LIMIT_EXCEEDED",
        "IMAGE_ARCHIVED",
        "IMAGE_SIZE_EXCEEDED",
    }
)
"""Statuses that give no findings to judge."""
PAGE_SIZE = 1000
"""``maxResults`` of each ``DescribeImageScanFindings`` page (ECR's largest)."""
_REPO = r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"
_REFERENCE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?"
    rf"/(?P<repository>{_REPO})(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?"
    r"@(?P<digest>sha256:[a-f0-9]{64})$"
)
_EXAMPLE = "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY@sha256:<64 hex digits>"


@dataclass(frozen=True)
class EcrImageRef:
    """An image in an ECR repository, by digest."""

    account: str
    region: str
    repository: str
    digest: str
    tag: str | None = None

    @property
    def short(self) -> str:
        return f"{self.repository}@{self.digest[:19]}"


def parse_image_ref(value: str) -> EcrImageRef:
    """``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG]@sha256:HEX`` as its parts; anything else
    (a tag alone, another registry, a malformed digest) is a ``ConfigError`` naming the value."""
    text = value.strip() if isinstance(value, str) else ""
    match = _REFERENCE.match(text)
    if match:
        return EcrImageRef(
            match["account"], match["region"], match["repository"], match["digest"], match["tag"]
        )
    if not isinstance(value, str) or not text:
        why = "it is empty"
    elif "@" not in text:
        why = "it names no digest (a tag may be moved; the gate must judge the exact image deployed)"
    elif ".dkr.ecr." not in text:
        why = "it is not an Amazon ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com)"
    else:
        why = "it is malformed"
    raise ConfigError(f"image reference {value!r}: {why}; expected {_EXAMPLE}")


class EcrImageScanner:
    """The ECR scan findings of images in the client's region (module docstring)."""

    def __init__(
        self,
        ecr: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ecr = ecr
        self._sleep = sleep
        self._clock = clock

    def findings(
        self,
        image: str,
        *,
        poll_s: float,
        timeout_s: float,
        progress: Progress | None = None,
    ) -> ScanReport:
        ref = parse_image_ref(image)
        if poll_s <= 0 or timeout_s < 0:
            raise ConfigError(
                f"scan of {image}: poll_s must be > 0 and timeout_s >= 0, got {poll_s}, {timeout_s}"
            )
        region = getattr(getattr(self.ecr, "meta", None), "region_name", None)
        if region and region != ref.region:
            raise ConfigError(
                f"image reference {image!r} is in {ref.region}; "
                f"this environment's registry client is in {region}"
            )
        say = progress or (lambda _message: None)
        deadline = self._clock() + timeout_s
        started = False
        while True:
            try:
                first = self._describe(ref)
            except ClientError as exc:
                code = _code(exc)
                if code != "ScanNotFoundException":
                    raise self._error("DescribeImageScanFindings", image, exc) from None
                if not started:
                    started = True
                    self._start(ref, image, say)
                status, description = "PENDING", "the scan was started"
            else:
                scan = first.get("imageScanStatus") or {}
                status, description = str(scan.get("status") or ""), str(scan.get("description") or "")
                if status in DONE:
                    return self._report(ref, image, first, status, description, started)
                if status not in WAITING:
                    known = "" if status in FAILED else " (a status this scanner does not know)"
                    raise ImageScanError(
                        f"scan of {image}: {status or 'no status'}{known}: {description or 'no description'}"
                    )
            left = deadline - self._clock()
            if left <= 0:
                raise ImageScanError(
                    f"scan of {image}: still {status} after {timeout_s:g} s "
                    f"({description or 'no description'}); "
                    "raise scan_timeout_s or run the release again once the scan has finished"
                )
            wait = min(poll_s, left)
            say(f"scan of {ref.short}: {status}; looking again in {wait:g} s ({left:.0f} s left)")
            self._sleep(wait)

    # -- calls ---------------------------------------------------------------------------------------

    def _image_id(self, ref: EcrImageRef) -> dict[str, Any]:
        return {
            "registryId": ref.account,
            "repositoryName": ref.repository,
            "imageId": {"imageDigest": ref.digest},
        }

    def _describe(self, ref: EcrImageRef, token: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {**self._image_id(ref), "maxResults": PAGE_SIZE}
        if token:
            params["nextToken"] = token
        answer: dict[str, Any] = self.ecr.describe_image_scan_findings(**params)
        return answer

    def _start(self, ref: EcrImageRef, image: str, say: Progress) -> None:
        say(f"{ref.short} has no scan (basic scanning without scan on push): starting one")
        try:
            self.ecr.start_image_scan(**self._image_id(ref))
        except ClientError as exc:
            if _code(exc) != "ValidationException":
                raise self._error("StartImageScan", image, exc) from None
            # a registry on enhanced scanning takes no manual scan: Inspector scans pushed images itself
            say(f"the registry refused a manual scan ({_message(exc)}): waiting for its own of {ref.short}")

    def _error(self, operation: str, image: str, exc: ClientError) -> Exception:
        code = _code(exc)
        if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
            return NotFoundError(f"{operation} of {image}: {code}: {_message(exc)}")
        return ImageScanError(f"{operation} of {image}: {code}: {_message(exc)}")

    def _report(
        self,
        ref: EcrImageRef,
        image: str,
        first: Mapping[str, Any],
        status: str,
        description: str,
        started: bool,
    ) -> ScanReport:
        body = first.get("imageScanFindings") or {}
        basic: list[Mapping[str, Any]] = list(body.get("findings") or [])
        enhanced: list[Mapping[str, Any]] = list(body.get("enhancedFindings") or [])
        token = first.get("nextToken")
        while token:
            try:
                page = self._describe(ref, str(token))
            except ClientError as exc:
                raise self._error("DescribeImageScanFindings", image, exc) from None
            more = page.get("imageScanFindings") or {}
            basic += list(more.get("findings") or [])
            enhanced += list(more.get("enhancedFindings") or [])
            token = page.get("nextToken")
        listed = [_basic(f) for f in basic] + [_enhanced(f) for f in enhanced]
        raw_counts = body.get("findingSeverityCounts")
        counts = {s: 0 for s in SEVERITIES}
        if raw_counts:
            for severity, count in dict(raw_counts).items():
                counts[str(severity).upper()] = int(count)
        else:  # no counts: the findings listed are all there is
            for finding, _score in listed:
                counts[finding.severity] = counts.get(finding.severity, 0) + 1
        ranked = sorted(listed, key=lambda fs: (severity_rank(fs[0].severity), -fs[1], fs[0].name))
        completed = body.get("imageScanCompletedAt")
        return ScanReport(
            image=image,
            digest=ref.digest,
            status=status,
            scan_type="enhanced" if enhanced or status == "ACTIVE" or counts.get("UNTRIAGED") else "basic",
            counts=counts,
            worst=tuple(f for f, _score in ranked[:WORST_SHOWN]),
            total=len(listed),
            started=started,
            completed_at=_when(completed),
            description=description,
        )


def _basic(raw: Mapping[str, Any]) -> tuple[Finding, float]:
    attributes = {str(a.get("key")): str(a.get("value")) for a in raw.get("attributes") or [] if a.get("key")}
    package = " ".join(p for p in (attributes.get("package_name"), attributes.get("package_version")) if p)
    try:
        score = float(attributes.get("CVSS3_SCORE") or attributes.get("CVSS2_SCORE") or 0.0)
    except ValueError:
        score = 0.0
    finding = Finding(
        name=str(raw.get("name") or "unnamed finding"),
        severity=str(raw.get("severity") or "UNDEFINED").upper(),
        package=package or None,
        uri=str(raw["uri"]) if raw.get("uri") else None,
    )
    return finding, score


def _enhanced(raw: Mapping[str, Any]) -> tuple[Finding, float]:
    details: Mapping[str, Any] = raw.get("packageVulnerabilityDetails") or {}
    packages: Sequence[Mapping[str, Any]] = details.get("vulnerablePackages") or []
    package = None
    if packages:
        first = packages[0]
        package = " ".join(str(p) for p in (first.get("name"), first.get("version")) if p) or None
    remediation = ((raw.get("remediation") or {}).get("recommendation") or {}).get("url")
    uri = details.get("sourceUrl") or remediation
    finding = Finding(
        name=str(details.get("vulnerabilityId") or raw.get("title") or raw.get("findingArn") or "unnamed"),
        severity=str(raw.get("severity") or "UNTRIAGED").upper(),
        package=package,
        uri=str(uri) if uri else None,
    )
    return finding, float(raw.get("score") or 0.0)


def _when(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
