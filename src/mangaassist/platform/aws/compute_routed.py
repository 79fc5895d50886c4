"""One ``Compute`` over several: each service goes to the provider that runs it.

An aws environment may run its chatbot on ECS (``compute = "ecs"``) and its intent model on a
SageMaker endpoint (``compute = "sagemaker"``); ``platform.factory`` gives pipelines one
``Compute`` for both. A service the environment does not declare is ``NotFoundError`` naming the
ones it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mangaassist.core.errors import NotFoundError
from mangaassist.platform.compute import Compute, Pin, Revision, RevisionStatus, ServiceStatus, Shadow


class ServiceRoutedCompute:
    """``Compute`` dispatching by service name to the provider that runs it."""

    def __init__(self, by_service: Mapping[str, Compute]) -> None:
        self.by_service = dict(by_service)

    def for_service(self, service: str) -> Compute:
        compute = self.by_service.get(service)
        if compute is None:
            raise NotFoundError(
                f"no service {service!r} in this environment (have: {', '.join(sorted(self.by_service))})"
            )
        return compute

    def close(self) -> None:
        for compute in {id(c): c for c in self.by_service.values()}.values():
            close: Any = getattr(compute, "close", None)
            if callable(close):
                close()

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        return self.for_service(service).deploy(service, revision, timeout_s=timeout_s)

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        return self.for_service(service).set_weights(service, weights)

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        return self.for_service(service).set_shadow(service, revision, share)

    def clear_shadow(self, service: str) -> None:
        self.for_service(service).clear_shadow(service)

    def pin(self, service: str, revision: str) -> Pin:
        return self.for_service(service).pin(service, revision)

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        return self.for_service(service).retire(service, revision, drain_timeout_s=drain_timeout_s, last=last)

    def status(self, service: str) -> ServiceStatus:
        return self.for_service(service).status(service)

    def services(self) -> list[str]:
        return sorted(self.by_service)

    def url(self, service: str) -> str:
        return self.for_service(service).url(service)
