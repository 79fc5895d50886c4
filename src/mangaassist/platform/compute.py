"""The ``Compute`` protocol: services, their revisions, and how traffic reaches them.

A *service* (the chatbot, a model endpoint) has *revisions*. A revision is an immutable artifact
(a path and its sha256 digest), the environment variables it runs with and a replica count.
Traffic reaches a service through its router, which splits new conversations by weight, keeps a
conversation on the revision it started on, reaches one revision whatever its weight through a
*pin* (``Compute.pin``: a URL and headers, since some providers pin by a header on the service's
URL and others by a URL of the revision's own) and mirrors a share of requests to a shadow revision.

Implemented by ``platform.local`` (worker processes on this machine, a reverse proxy in front of
them) and by ``platform.aws`` (SageMaker endpoints so far). Pipelines (``delivery``), the demo and
the CLI get it only from ``platform.factory.Platform.compute``. What each revision served is read
through ``platform.metrics.Metrics``, not here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError, MangaAssistError

if TYPE_CHECKING:
    import httpx

PIN_HEADER = "X-MangaAssist-Revision"
"""Request header that pins one request to a named revision, even one at 0% (smoke tests), where the
provider pins by header (the local router, ECS's ALB rules); callers get it from ``Compute.pin``."""
CUSTOMER_TOKEN_HEADER = "X-MangaAssist-Authorization"  # noqa: S105 - a header name, not a secret
"""Where the customer's ``Bearer <token>`` goes when something else owns ``Authorization`` (a pin's
SigV4 signer, a gateway): the chatbot reads it beside ``Authorization`` (``chatbot.identity``)."""


def parse_bearer(value: str) -> str | None:
    """The token of a ``Bearer <token>`` header value (scheme in any case, one token without
    spaces); None when it is not one. What the chatbot accepts and a pin's signer moves."""
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token and " " not in token else None


SESSION_HEADER = "X-Session-Id"
"""Request header that names the conversation; the ``ma_session`` cookie is the fallback."""
SESSION_COOKIE = "ma_session"
SHADOW_HEADER = "X-MangaAssist-Shadow"
"""Set to ``1`` on mirrored requests, so a workload can skip side effects for them."""


class NotRunning(MangaAssistError):
    """The platform that runs the services does not answer (locally: no control plane runs for
    this state directory; ``mangaassist up`` starts one)."""


class WorkerState(enum.Enum):
    """Where one worker process of a revision is in its life."""

    STARTING = "starting"
    """Spawned; ``/readyz`` has not answered 200 yet. Gets no traffic."""
    READY = "ready"
    """``/readyz`` answered 200 and the process runs. The router may send it requests."""
    RESTARTING = "restarting"
    """The process exited unexpectedly; it is restarted after a backoff delay. Gets no traffic."""
    FAILED = "failed"
    """Given up on: crashed too often, or never became ready. Gets no traffic; ``reason`` says why."""
    STOPPED = "stopped"
    """Stopped on purpose (retire, shutdown)."""


class RevisionHealth(enum.Enum):
    """The health of a revision as a whole, derived from its workers."""

    STARTING = "starting"
    """Deployed, no worker ready yet (loading)."""
    HEALTHY = "healthy"
    """Every worker is ready."""
    DEGRADED = "degraded"
    """Some workers are ready, others are starting or restarting; traffic goes to the ready ones."""
    UNHEALTHY = "unhealthy"
    """No worker is ready after repeated crashes, or it never became ready; ``reason`` says why.
    Gets no traffic (a header pin answers 503)."""
    DRAINING = "draining"
    """Being retired: receives nothing new, in-flight requests finish."""
    RETIRED = "retired"
    """Drained and stopped; its conversations move (and the moves are counted)."""


@dataclass(frozen=True)
class Revision:
    """What to run: one immutable version of a service.

    ``artifact``: the code (a source archive; its digest is checked before it runs).
    ``app``: the ASGI factory inside the artifact, ``module:callable`` (uvicorn ``--factory``).
    ``env``: extra environment variables of every worker. ``replicas``: worker processes.
    """

    name: str
    artifact: Artifact
    app: str
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "artifact": {"path": str(self.artifact.path), "digest": self.artifact.digest},
            "app": self.app,
            "env": dict(self.env),
            "replicas": self.replicas,
        }


@dataclass(frozen=True)
class WorkerStatus:
    pid: int | None
    port: int
    state: WorkerState
    restarts: int
    reason: str | None = None


@dataclass(frozen=True)
class RevisionStatus:
    """A revision as it runs now: health, the reason when not healthy, its workers."""

    name: str
    digest: str
    replicas: int
    health: RevisionHealth
    reason: str | None
    weight: float
    workers: tuple[WorkerStatus, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevisionStatus:
        return cls(
            name=str(data["name"]),
            digest=str(data["digest"]),
            replicas=int(data["replicas"]),
            health=RevisionHealth(data["health"]),
            reason=data.get("reason"),
            weight=float(data["weight"]),
            workers=tuple(
                WorkerStatus(
                    pid=w.get("pid"),
                    port=int(w["port"]),
                    state=WorkerState(w["state"]),
                    restarts=int(w["restarts"]),
                    reason=w.get("reason"),
                )
                for w in data.get("workers", [])
            ),
        )


@dataclass(frozen=True)
class Pin:
    """Where one request reaches one revision whatever its weight: send it to ``url`` (the base URL,
    paths are appended as to ``Compute.url``) with ``headers``, through ``auth`` when it is set
    (``httpx.Client(auth=pin.auth)``, or ``auth=`` per request).

    The local router and ECS: the service's URL and ``X-MangaAssist-Revision: NAME``; SageMaker: the
    endpoint's invocation URL and ``X-Amzn-SageMaker-Target-Variant: NAME``; Lambda: the function URL
    of the revision's own alias (a weighted alias's URL cannot be pinned), where the header routes
    nothing but still tells the workload the request is a gate's, not a user's.

    ``auth``: what every request to the pin must go through, None when nothing: on Lambda with
    ``AWS_IAM`` function URLs, a SigV4 signer (service ``lambda``) that first moves a customer's
    ``Authorization: Bearer`` to ``X-MangaAssist-Authorization`` (``CUSTOMER_TOKEN_HEADER``), since
    the signature takes ``Authorization``. Callers set the customer's token as usual.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: httpx.Auth | None = None


@dataclass(frozen=True)
class Shadow:
    """Mirror ``share`` (0..1) of requests to ``revision``; its answers never reach users."""

    revision: str
    share: float


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    revisions: tuple[RevisionStatus, ...]
    weights: Mapping[str, float]
    shadow: Shadow | None


def check_weights(weights: Mapping[str, float]) -> None:
    """``ConfigError`` unless the weights are percentages, none negative, adding up to 100: what
    every provider's ``set_weights`` accepts."""
    for rev, w in weights.items():
        if w < 0:
            raise ConfigError(f"weight of {rev} is negative ({w:g})")
    total = sum(weights.values())
    if abs(total - 100.0) > 1e-6:
        raise ConfigError(
            f"weights must add up to 100 (percent); got {total:g} from "
            + ", ".join(f"{k}={v:g}" for k, v in weights.items())
        )


class Compute(Protocol):
    """Services and their revisions, traffic weights, sticky sessions, pins and shadows."""

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        """Start the revision's workers and wait until they are ready (or failed; see ``reason``).

        A new revision gets no traffic (weight 0) unless it is the service's only one. A revision
        that never becomes ready stays UNHEALTHY and gets no traffic.
        """

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        """Replace the split of new conversations at once (percentages; revisions left out get 0).

        Atomic: a request is routed by either the old or the new table, never a mix, and no
        in-flight request is dropped. Existing conversations stay where they are.
        """

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        """Mirror ``share`` (0..1) of requests to ``revision``, asynchronously."""

    def clear_shadow(self, service: str) -> None:
        """Stop mirroring."""

    def pin(self, service: str, revision: str) -> Pin:
        """Where a request reaches ``revision`` whatever its weight (smoke tests, pinned gates,
        readiness checks): a URL and the headers to send with it. A revision that does not exist
        (or is retired) is ``NotFoundError`` naming the service and the revision."""

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        """Take the revision out of routing, wait for in-flight requests, stop its workers.

        Its weight must already be 0. Its conversations move on their next request (counted).
        ``last``: the revision may be the service's only one, whatever its weight; the service is
        then left with no revision and answers 503 until the next deploy, which takes all of its
        traffic again (a first release rolled back: CD-01). Without it, retiring a weighted or the
        only revision is refused. A provider that cannot leave a service empty raises
        ``NotSupportedError`` naming why, and changes nothing.
        """

    def status(self, service: str) -> ServiceStatus:
        """The service's revisions, health, weights, shadow and URL."""

    def services(self) -> list[str]:
        """Names of the services this platform runs."""

    def url(self, service: str) -> str:
        """Where users reach the service (its router)."""
