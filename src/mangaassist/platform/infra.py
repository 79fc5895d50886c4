"""``Provisioner``: what an environment's provider has of the declared resources, and making it so.

The declaration (``core.resources``) says what should exist; ``delivery.infra`` turns it into one
``ResourceSpec`` per resource and plans against ``current()``. A provider creates or updates a
resource from its spec (``apply``) and remembers what it provisioned, so a resource deleted outside
CD-02 is reported as drift, not silently treated as new.

Providers: ``platform/local/infra.py`` (SQLite tables with their key indexes, directories for
vector indexes, sites and buckets; services and profiles checked against the local platform). On
AWS the CDK app and CloudFormation change sets provision (``platform/aws/cloudformation.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ResourceSpec:
    """One declared resource as a provider needs it: its kind, logical name and properties (JSON)."""

    kind: str
    name: str
    properties: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def digest(self) -> str:
        body = json.dumps(self.properties, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Present:
    """What the provider finds of a resource: its properties as they are now, and whether the
    provider's own record says it provisioned it (``recorded``) before."""

    properties: dict[str, Any] | None
    """None: the resource does not exist."""
    recorded: bool


class Provisioner(Protocol):
    def current(self, specs: list[ResourceSpec]) -> dict[str, Present]:
        """What exists of each spec (by ``ResourceSpec.key``), and what the provider's record knows."""
        ...

    def apply(self, spec: ResourceSpec) -> str:
        """Create or update the resource to match ``spec``; idempotent; returns what it did."""
        ...

    def close(self) -> None: ...
