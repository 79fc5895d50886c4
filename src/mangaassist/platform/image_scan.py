"""Vulnerability findings of a container image, as a registry's scanner reports them.

``ImageScanner.findings(image, ...)`` judges nothing: it returns what the registry's scanner found
in the exact image ``image`` names (a reference by digest), waiting while the scan runs and
starting one when none exists. What is acceptable is the delivery gate's decision
(``delivery.analysis.gates.image_scan_gate``). The aws provider is ``EcrImageScanner``
(``platform.aws.image_scan``: Amazon ECR's basic scanning and enhanced scanning by Amazon
Inspector), made by ``platform.factory.Platform.image_scanner``; the local platform runs
wheel-based revisions and has no images to scan.

Severities are ECR's: ``CRITICAL``, ``HIGH``, ``MEDIUM``, ``LOW``, ``INFORMATIONAL``,
``UNDEFINED`` (basic scanning), and ``UNTRIAGED`` (Inspector's, enhanced scanning).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mangaassist.core.errors import MangaAssistError

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED")
"""Every severity a finding may have, worst first (``UNTRIAGED``: enhanced scanning's, not ranked
by Inspector yet, shown after the ranked ones)."""
IMAGE_ENV = "ECS_IMAGE"
"""The revision env that names its container image on ECS (``platform.aws.compute_ecs.IMAGE_ENV``,
the same name: a test holds them together), provider-neutral so the pipeline need not import the
provider."""
LAMBDA_IMAGE_ENV = "LAMBDA_IMAGE"
"""The revision env that names its container image on Lambda, the burst path
(``platform.aws.compute_lambda.IMAGE_ENV``, the same name: a test holds them together)."""
IMAGE_ENVS = (IMAGE_ENV, LAMBDA_IMAGE_ENV)
"""Every revision env that names a container image of CD-01's: its ``scan`` gate judges each image
a release names in these (once when two name the same image), in this order."""
WORST_SHOWN = 5
"""How many findings a ``ScanReport`` keeps (the worst first)."""
Progress = Callable[[str], None]


class ImageScanError(MangaAssistError):
    """The scanner did not give findings for the image: the scan failed, the image is unsupported,
    or the wait ran out. The message names the image and the scanner's own words."""


def image_identity(reference: str) -> str:
    """Which image ``reference`` names, to tell one image named twice from two images: a tag beside
    a digest says nothing of the bytes, so it is dropped (``REPO:TAG@sha256:X`` is
    ``REPO@sha256:X``); a registry's port stays. Anything else is the reference as it is."""
    text = reference.strip()
    return re.sub(r":[^/@]+(?=@)", "", text) if "@" in text else text


def severity_rank(severity: str) -> int:
    """Where ``severity`` sorts, worst first (an unknown one after every known one)."""
    name = severity.upper()
    return SEVERITIES.index(name) if name in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True)
class Finding:
    """One vulnerability of the image."""

    name: str
    """The vulnerability's id (``CVE-2024-1234``) or, failing that, its title."""
    severity: str
    package: str | None = None
    """``name version`` of the vulnerable package, when the scanner says."""
    uri: str | None = None
    """Where to read about it."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "package": self.package, "uri": self.uri}

    def describe(self) -> str:
        where = f" in {self.package}" if self.package else ""
        return f"{self.name} ({self.severity}{where})"


@dataclass(frozen=True)
class ScanReport:
    """What the scanner found in one image."""

    image: str
    """The reference judged, by digest."""
    digest: str
    status: str
    """The scanner's final status: ``COMPLETE`` (basic) or ``ACTIVE`` (enhanced, continuous)."""
    scan_type: str
    """``basic`` (ECR's own) or ``enhanced`` (Amazon Inspector)."""
    counts: Mapping[str, int]
    """Findings per severity, every one of ``SEVERITIES`` present (0 when none)."""
    worst: tuple[Finding, ...] = ()
    """The ``WORST_SHOWN`` worst findings, worst first."""
    total: int = 0
    """How many findings the scanner listed (every page)."""
    started: bool = False
    """Whether this call started the scan (none existed: basic scanning without scan on push)."""
    completed_at: str | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "status": self.status,
            "scan_type": self.scan_type,
            "counts": dict(self.counts),
            "worst": [f.as_dict() for f in self.worst],
            "total": self.total,
            "started": self.started,
            "completed_at": self.completed_at,
            "description": self.description,
        }


class ImageScanner(Protocol):
    """A registry's vulnerability scanner."""

    def findings(
        self,
        image: str,
        *,
        poll_s: float,
        timeout_s: float,
        progress: Progress | None = None,
    ) -> ScanReport:
        """The findings of ``image`` (a reference by digest; anything else is a ``ConfigError``
        naming it). A scan in progress is polled every ``poll_s`` for at most ``timeout_s``; an
        image never scanned is scanned first. A failed, unsupported or unfinished scan is an
        ``ImageScanError``."""
        ...
