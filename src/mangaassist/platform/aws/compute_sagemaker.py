"""``Compute`` for model endpoints on Amazon SageMaker real-time inference (CD-03).

Mapping (each line is one SageMaker concept):

* a *service* is an endpoint, named ``{name_prefix}{service}`` (the prefix keeps environments apart);
* a *revision* is a production variant of that endpoint, named like the revision, backed by one
  SageMaker Model ``{endpoint}-{revision}-{digest[:8]}``. The Model's container is
  ``Image`` = ``revision.env["SAGEMAKER_IMAGE"]`` or the constructor's ``image``, and
  ``ModelDataUrl`` = ``revision.env["SAGEMAKER_MODEL_DATA_URL"]`` or, when an S3 client and
  ``artifact_bucket`` are given, the revision's artifact uploaded (once, content-addressed) to
  ``s3://{artifact_bucket}/{artifact_prefix}{service}/{digest}.tar.gz``. The container's
  environment is the revision's ``env`` (less the two ``SAGEMAKER_*`` keys) plus
  ``MANGAASSIST_REVISION``, ``MANGAASSIST_APP`` and ``MANGAASSIST_ARTIFACT_DIGEST`` (``status``
  reads the digest back from there). ``replicas`` is the variant's instance count.
* ``deploy``: ``CreateModel``, then a new endpoint config holding the variants that run now (at the
  weights they have now) plus the new one at weight 0, then ``UpdateEndpoint`` (the first revision:
  ``CreateEndpoint``, at 100). It waits (``DescribeEndpoint``) until the endpoint is ``InService``
  or ``timeout_s`` passes: SageMaker takes minutes, so give it 900 s or more against real AWS. A
  revision still coming up when the time is out is returned as ``STARTING``; an endpoint that
  ``Failed`` makes it ``UNHEALTHY`` with SageMaker's ``FailureReason``.
* ``set_weights``: one ``UpdateEndpointWeightsAndCapacities`` call with a ``DesiredWeight`` for every
  variant (the ones left out get 0). Weights are percentages and must add up to 100.
* ``set_shadow``: SageMaker shadow variants (``ShadowProductionVariants`` in an endpoint config). An
  endpoint with a shadow has exactly one production variant (a SageMaker rule), so the service must
  serve one revision at 100% and the shadow revision leaves the production variants. The share is
  the shadow variant's ``InitialVariantWeight`` relative to the production variant's (100), which is
  how SageMaker sets the sampling share of requests copied to the shadow. ``clear_shadow`` puts the
  shadow revision back as a production variant at weight 0 (ready for a canary).
* ``retire``: a new endpoint config without the variant (weight must be 0), ``UpdateEndpoint``,
  then the variant's Model and the superseded endpoint config are deleted.
* ``pin``: ``url`` with the header ``X-Amzn-SageMaker-Target-Variant`` (``InvokeEndpoint``'s
  ``TargetVariant``); ``url``: the runtime ``.../endpoints/{endpoint}/invocations`` URL.
* ``status``: ``DescribeEndpoint`` (variant weights, instance counts, variant and endpoint status),
  ``DescribeEndpointConfig`` and ``DescribeModel`` (the digest). A revision has no workers here
  (SageMaker does not expose instances); ``replicas`` is the current instance count.
* ``stats``: CloudWatch ``GetMetricData`` on ``AWS/SageMaker`` ``Invocations``,
  ``Invocation5XXErrors``, ``Invocation4XXErrors`` and ``ModelLatency`` per ``EndpointName`` /
  ``VariantName``: aggregates per revision since ``cursor`` (a Unix time in seconds here). It
  returns **no per-request ``observations``**: CloudWatch has none, so the sequential canary judges
  (which read observations) get nothing and stay INCONCLUSIVE on this provider. Per-request data
  would come from SageMaker Data Capture (JSON lines in S3), which is not read yet.

Errors: an unknown endpoint or variant is ``NotFoundError``; bad input (weights, names, share,
missing image or model data) is ``ConfigError``; an operation that does not fit the endpoint's state
(retiring a weighted variant, shadowing while two variants serve) is ``EndpointStateError``; any
other ``ClientError`` becomes ``SageMakerError`` naming the operation and AWS's code and message.

Status: tested against moto 5.2.5 (``tests/unit/platform/test_compute_sagemaker.py``) for what moto
implements: models, endpoint configs, ``CreateEndpoint``, ``DescribeEndpoint``, ``ListEndpoints``,
``UpdateEndpointWeightsAndCapacities`` and CloudWatch metrics. moto 5.2.5 has no ``UpdateEndpoint``
(the tests add it to moto's backend with AWS's documented meaning: the endpoint takes the new
config's variants) and ignores ``ShadowProductionVariants``, so the shadow calls are tested with
botocore's ``Stubber`` (exact requests) instead. It has not run against a real AWS account yet.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform.aws.compute_ecs import NotSupportedError
from mangaassist.platform.compute import (
    Pin,
    Revision,
    RevisionHealth,
    RevisionStatus,
    ServiceStatus,
    Shadow,
    check_weights,
)

TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
"""``InvokeEndpoint``'s ``TargetVariant`` as an HTTP header: one request to one named variant."""
IMAGE_ENV = "SAGEMAKER_IMAGE"
MODEL_DATA_ENV = "SAGEMAKER_MODEL_DATA_URL"
DIGEST_ENV = "MANGAASSIST_ARTIFACT_DIGEST"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack"}
_METRICS = {
    "requests": ("Invocations", "Sum"),
    "errors_5xx": ("Invocation5XXErrors", "Sum"),
    "errors_4xx": ("Invocation4XXErrors", "Sum"),
    "model_latency_us_avg": ("ModelLatency", "Average"),
    "model_latency_us_max": ("ModelLatency", "Maximum"),
}


class EndpointStateError(MangaAssistError):
    """The operation does not fit the endpoint as it is (e.g. retiring a variant that has weight)."""


class SageMakerError(MangaAssistError):
    """SageMaker (or CloudWatch, S3) refused a call; the message names the operation and AWS's code."""


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not a valid SageMaker name (1-63 letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return name


def _weights(variants: list[dict[str, Any]]) -> list[str]:
    return [f"{v['VariantName']}={v['InitialVariantWeight']:g}" for v in variants]


def is_not_found(exc: ClientError) -> bool:
    """Whether AWS answered that the named resource does not exist (SageMaker says so in a
    ``ValidationException``'s message: "could not find", "does not exist", "not present", or "not
    found" as for a missing model package version)."""
    err = exc.response.get("Error", {})
    message = str(err.get("Message", "")).lower()
    return err.get("Code") in {"ValidationException", "ResourceNotFound"} and any(
        words in message for words in ("could not find", "does not exist", "not present", "not found")
    )


class SageMakerEndpointCompute:
    """``Compute`` on SageMaker endpoints; every client is injected (tests pass moto or stubbed ones).

    ``sagemaker``: a boto3 ``sagemaker`` client. ``execution_role_arn``: the role every Model runs
    as. ``cloudwatch``: for ``stats`` (optional). ``s3`` with ``artifact_bucket``: to upload
    artifacts that have no ``SAGEMAKER_MODEL_DATA_URL`` (optional). ``poll_s`` / ``sleep``: how
    ``deploy``, ``set_weights`` and ``retire`` wait for the endpoint to be ``InService``.
    ``config_suffix``: makes each new endpoint config's name (``{endpoint}-{suffix}``) unique.
    """

    def __init__(
        self,
        sagemaker: Any,
        *,
        execution_role_arn: str,
        image: str | None = None,
        instance_type: str = "ml.m5.large",
        name_prefix: str = "",
        cloudwatch: Any = None,
        s3: Any = None,
        artifact_bucket: str | None = None,
        artifact_prefix: str = "endpoint-artifacts/",
        poll_s: float = 15.0,
        update_timeout_s: float = 1800.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        config_suffix: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
    ) -> None:
        self.sm = sagemaker
        self.role = execution_role_arn
        self.image = image
        self.instance_type = instance_type
        self.prefix = name_prefix
        self.cloudwatch = cloudwatch
        self.s3 = s3
        self.bucket = artifact_bucket
        self.artifact_prefix = artifact_prefix
        self.poll_s = poll_s
        self.update_timeout_s = update_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._suffix = config_suffix

    # ------------------------------------------------------------------ helpers

    def endpoint_name(self, service: str) -> str:
        return _check_name("endpoint", f"{self.prefix}{service}")

    def _call(self, client: Any, op: str, **params: Any) -> Any:
        try:
            return getattr(client, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            detail = f"{op}: {err.get('Code', '?')}: {err.get('Message', exc)}"
            if is_not_found(exc):
                raise NotFoundError(detail) from None
            raise SageMakerError(detail) from None

    def _describe(self, service: str) -> dict[str, Any]:
        name = self.endpoint_name(service)
        try:
            found: dict[str, Any] = self.sm.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if is_not_found(exc):
                raise NotFoundError(f"no SageMaker endpoint {name!r} (service {service!r})") from None
            raise SageMakerError(f"DescribeEndpoint {name}: {exc}") from None
        return found

    def _variant(self, endpoint: Mapping[str, Any], service: str, revision: str) -> dict[str, Any]:
        for v in endpoint.get("ProductionVariants", []):
            if v["VariantName"] == revision:
                return dict(v)
        names = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])]
        raise NotFoundError(
            f"service {service} has no revision {revision!r} (variants: {', '.join(names) or 'none'})"
        )

    def _config(self, endpoint: Mapping[str, Any]) -> dict[str, Any]:
        config: dict[str, Any] = self._call(
            self.sm, "describe_endpoint_config", EndpointConfigName=endpoint["EndpointConfigName"]
        )
        return config

    def _wait(self, service: str, timeout_s: float) -> dict[str, Any]:
        deadline = self._clock() + timeout_s
        while True:
            endpoint = self._describe(service)
            if endpoint["EndpointStatus"] not in _BUSY or self._clock() >= deadline:
                return endpoint
            self._sleep(self.poll_s)

    def _new_config(
        self, service: str, variants: list[dict[str, Any]], shadows: list[dict[str, Any]] | None = None
    ) -> str:
        name = _check_name("endpoint config", f"{self.endpoint_name(service)}-{self._suffix()}")
        params: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": variants}
        if shadows:
            params["ShadowProductionVariants"] = shadows
        self._call(self.sm, "create_endpoint_config", **params)
        return name

    def _variant_spec(self, name: str, model: str, instances: int, weight: float) -> dict[str, Any]:
        return {
            "VariantName": name,
            "ModelName": model,
            "InitialInstanceCount": instances,
            "InstanceType": self.instance_type,
            "InitialVariantWeight": float(weight),
        }

    def _current_specs(
        self, endpoint: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The endpoint's variants as config entries, at the weights and instance counts they have now."""
        config = self._config(endpoint)
        live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
        specs = []
        for v in config.get("ProductionVariants", []):
            now = live.get(v["VariantName"], {})
            spec = {**v}
            spec["InitialVariantWeight"] = float(now.get("CurrentWeight", v.get("InitialVariantWeight", 0.0)))
            spec["InitialInstanceCount"] = int(
                now.get("CurrentInstanceCount", v.get("InitialInstanceCount", 1))
            )
            specs.append(spec)
        return specs, [dict(s) for s in config.get("ShadowProductionVariants", [])]

    def _switch(self, service: str, config_name: str, old_config: str, timeout_s: float) -> dict[str, Any]:
        self._call(
            self.sm,
            "update_endpoint",
            EndpointName=self.endpoint_name(service),
            EndpointConfigName=config_name,
        )
        endpoint = self._wait(service, timeout_s)
        if endpoint.get("EndpointConfigName") == config_name and endpoint["EndpointStatus"] == "InService":
            self._call(self.sm, "delete_endpoint_config", EndpointConfigName=old_config)
        return endpoint

    def _model_data_url(self, service: str, revision: Revision) -> str:
        if MODEL_DATA_ENV in revision.env:
            return revision.env[MODEL_DATA_ENV]
        if self.s3 is None or not self.bucket:
            raise ConfigError(
                f"revision {revision.name}: set env {MODEL_DATA_ENV} (an s3:// URI of model.tar.gz) or give "
                "SageMakerEndpointCompute an s3 client and artifact_bucket to upload the artifact"
            )
        key = f"{self.artifact_prefix}{service}/{revision.artifact.digest}.tar.gz"
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            if not revision.artifact.path.is_file():
                raise ConfigError(
                    f"revision {revision.name}: artifact {revision.artifact.path} is not a file"
                ) from None
            self._call(
                self.s3, "upload_file", Filename=str(revision.artifact.path), Bucket=self.bucket, Key=key
            )
        return f"s3://{self.bucket}/{key}"

    def _create_model(self, service: str, revision: Revision) -> str:
        image = revision.env.get(IMAGE_ENV) or self.image
        if not image:
            raise ConfigError(
                f"revision {revision.name}: no container image "
                f"(set env {IMAGE_ENV} or SageMakerEndpointCompute(image=...))"
            )
        model = _check_name(
            "model", f"{self.endpoint_name(service)}-{revision.name}-{revision.artifact.digest[:8]}"
        )
        env = {k: v for k, v in revision.env.items() if k not in {IMAGE_ENV, MODEL_DATA_ENV}}
        env.update(
            {
                "MANGAASSIST_REVISION": revision.name,
                "MANGAASSIST_APP": revision.app,
                DIGEST_ENV: revision.artifact.digest,
            }
        )
        self._call(
            self.sm,
            "create_model",
            ModelName=model,
            ExecutionRoleArn=self.role,
            PrimaryContainer={
                "Image": image,
                "ModelDataUrl": self._model_data_url(service, revision),
                "Environment": env,
            },
        )
        return model

    def _health(
        self, endpoint: Mapping[str, Any], variant: Mapping[str, Any]
    ) -> tuple[RevisionHealth, str | None]:
        state = endpoint["EndpointStatus"]
        if state in {"Failed", "OutOfService", "UpdateRollbackFailed"}:
            return (
                RevisionHealth.UNHEALTHY,
                f"endpoint {state}: {endpoint.get('FailureReason', 'no reason given')}",
            )
        if state == "Deleting":
            return RevisionHealth.DRAINING, "endpoint Deleting"
        if state == "Creating":
            return RevisionHealth.STARTING, "endpoint Creating"
        steps = [s.get("Status") for s in variant.get("VariantStatus", [])]
        if "Creating" in steps:
            return RevisionHealth.STARTING, "variant Creating"
        if "Deleting" in steps:
            return RevisionHealth.DRAINING, "variant Deleting"
        if state in _BUSY:
            return RevisionHealth.DEGRADED, f"endpoint {state}"
        return RevisionHealth.HEALTHY, None

    def _revision_status(
        self, endpoint: Mapping[str, Any], variant: Mapping[str, Any], model: str | None
    ) -> RevisionStatus:
        digest = ""
        if model:
            with_model = self._call(self.sm, "describe_model", ModelName=model)
            digest = str(with_model.get("PrimaryContainer", {}).get("Environment", {}).get(DIGEST_ENV, ""))
        health, reason = self._health(endpoint, variant)
        total = sum(float(v.get("CurrentWeight", 0.0)) for v in endpoint.get("ProductionVariants", []))
        weight = float(variant.get("CurrentWeight", 0.0))
        return RevisionStatus(
            name=str(variant["VariantName"]),
            digest=digest,
            replicas=int(variant.get("CurrentInstanceCount", variant.get("DesiredInstanceCount", 0)) or 0),
            health=health,
            reason=reason,
            weight=weight * 100.0 / total if total > 0 else 0.0,
            workers=(),
        )

    # ------------------------------------------------------------------ Compute

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        _check_name("revision", revision.name)
        if revision.replicas < 1:
            raise ConfigError(f"revision {revision.name}: replicas must be at least 1")
        name = self.endpoint_name(service)
        try:
            endpoint: dict[str, Any] | None = self._describe(service)
        except NotFoundError:
            endpoint = None
        if endpoint is None:
            model = self._create_model(service, revision)
            config = self._new_config(
                service, [self._variant_spec(revision.name, model, revision.replicas, 100.0)]
            )
            self._call(self.sm, "create_endpoint", EndpointName=name, EndpointConfigName=config)
            endpoint = self._wait(service, timeout_s)
        else:
            if endpoint["EndpointStatus"] in _BUSY:
                raise EndpointStateError(
                    f"endpoint {name} is {endpoint['EndpointStatus']}; deploy when it is InService"
                )
            variants, shadows = self._current_specs(endpoint)
            taken = {v["VariantName"] for v in variants} | {s["VariantName"] for s in shadows}
            if revision.name in taken:
                raise ConfigError(
                    f"service {service} already has a revision {revision.name!r}; retire it first"
                )
            if shadows:
                raise EndpointStateError(
                    f"service {service} shadows {shadows[0]['VariantName']}; a SageMaker endpoint with a "
                    "shadow has one production variant, so clear the shadow before deploying"
                )
            model = self._create_model(service, revision)
            variants.append(self._variant_spec(revision.name, model, revision.replicas, 0.0))
            config = self._new_config(service, variants, shadows)
            endpoint = self._switch(service, config, endpoint["EndpointConfigName"], timeout_s)
        for v in endpoint.get("ProductionVariants", []):
            if v["VariantName"] == revision.name:
                return self._revision_status(endpoint, v, model)
        health, reason = self._health(endpoint, {})
        if endpoint["EndpointStatus"] in _BUSY:  # timed out while SageMaker still works on it
            health, reason = RevisionHealth.STARTING, f"endpoint still {endpoint['EndpointStatus']}"
        elif health is RevisionHealth.HEALTHY:  # InService on the old config: the update was rolled back
            health, reason = (
                RevisionHealth.UNHEALTHY,
                endpoint.get("FailureReason", "the update did not apply"),
            )
        return RevisionStatus(revision.name, revision.artifact.digest, 0, health, reason, 0.0, ())

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        check_weights(weights)
        endpoint = self._describe(service)
        for rev in weights:
            self._variant(endpoint, service, rev)
        desired = [
            {"VariantName": v["VariantName"], "DesiredWeight": float(weights.get(v["VariantName"], 0.0))}
            for v in endpoint.get("ProductionVariants", [])
        ]
        self._call(
            self.sm,
            "update_endpoint_weights_and_capacities",
            EndpointName=self.endpoint_name(service),
            DesiredWeightsAndCapacities=desired,
        )
        self._wait(service, self.update_timeout_s)
        return {d["VariantName"]: d["DesiredWeight"] for d in desired if d["DesiredWeight"] > 0}

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        if not 0 < share <= 1:
            raise ConfigError(f"shadow share {share} is not in (0, 1]")
        endpoint = self._describe(service)
        variants, shadows = self._current_specs(endpoint)
        by_name = {v["VariantName"]: v for v in [*variants, *shadows]}
        if revision not in by_name:
            raise NotFoundError(f"service {service} has no revision {revision!r} to shadow (deploy it first)")
        in_production = revision in {v["VariantName"] for v in variants}
        if in_production and by_name[revision]["InitialVariantWeight"] > 0:
            raise EndpointStateError(
                f"revision {revision} serves users; move its weight to 0 before shadowing it"
            )
        serving = [v for v in variants if v["InitialVariantWeight"] > 0]
        if len(serving) != 1:
            raise EndpointStateError(
                "a SageMaker shadow needs exactly one serving variant; "
                f"{service} serves " + (", ".join(_weights(serving)) or "nothing")
            )
        others = [
            v["VariantName"]
            for v in [*variants, *shadows]
            if v["VariantName"] not in {revision, serving[0]["VariantName"]}
        ]
        if others:
            raise EndpointStateError(
                "a SageMaker endpoint with a shadow has one production variant; "
                f"retire {', '.join(others)} first"
            )
        primary = {**serving[0], "InitialVariantWeight": 100.0}
        shadow = {**by_name[revision], "InitialVariantWeight": round(share * 100.0, 6)}
        config = self._new_config(service, [primary], [shadow])
        self._switch(service, config, endpoint["EndpointConfigName"], self.update_timeout_s)
        return Shadow(revision, share)

    def clear_shadow(self, service: str) -> None:
        endpoint = self._describe(service)
        variants, shadows = self._current_specs(endpoint)
        if not shadows:
            return
        back = [{**s, "InitialVariantWeight": 0.0} for s in shadows]
        config = self._new_config(service, [*variants, *back])
        self._switch(service, config, endpoint["EndpointConfigName"], self.update_timeout_s)

    def pin(self, service: str, revision: str) -> Pin:
        self._variant(self._describe(service), service, revision)
        return Pin(self.url(service), {TARGET_VARIANT_HEADER: revision})

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        """``last`` for the only variant is ``NotSupportedError``: an endpoint always serves one."""
        endpoint = self._describe(service)
        variants, shadows = self._current_specs(endpoint)
        mine = [v for v in [*variants, *shadows] if v["VariantName"] == revision]
        if not mine:
            raise NotFoundError(f"service {service} has no revision {revision!r}")
        spec = mine[0]
        keep = [v for v in variants if v["VariantName"] != revision]
        if not keep and last:
            raise NotSupportedError(
                f"revision {revision} is the only variant of {service}, and an endpoint always serves "
                "one: deploy a fixed revision and move the traffic to it"
            )
        if spec["VariantName"] in {v["VariantName"] for v in variants} and spec["InitialVariantWeight"] > 0:
            raise EndpointStateError(
                f"revision {revision} still has weight {spec['InitialVariantWeight']:g}; move it to 0 first"
            )
        if not keep:
            raise EndpointStateError(
                f"revision {revision} is the only variant of {service}; it cannot be retired"
            )
        config = self._new_config(service, keep, [s for s in shadows if s["VariantName"] != revision])
        endpoint = self._switch(
            service, config, endpoint["EndpointConfigName"], max(drain_timeout_s, self.update_timeout_s)
        )
        gone = all(v["VariantName"] != revision for v in endpoint.get("ProductionVariants", []))
        if gone:
            self._call(self.sm, "delete_model", ModelName=spec["ModelName"])
        return RevisionStatus(
            name=revision,
            digest="",
            replicas=0,
            health=RevisionHealth.RETIRED if gone else RevisionHealth.DRAINING,
            reason=None if gone else f"endpoint {endpoint['EndpointStatus']}",
            weight=0.0,
            workers=(),
        )

    def status(self, service: str) -> ServiceStatus:
        endpoint = self._describe(service)
        config = self._config(endpoint)
        models = {
            v["VariantName"]: v.get("ModelName")
            for v in [*config.get("ProductionVariants", []), *config.get("ShadowProductionVariants", [])]
        }
        revisions = [
            self._revision_status(endpoint, v, models.get(v["VariantName"]))
            for v in endpoint.get("ProductionVariants", [])
        ]
        shadow = None
        shadow_live = endpoint.get("ShadowProductionVariants") or config.get("ShadowProductionVariants") or []
        if shadow_live:
            s = shadow_live[0]
            s_weight = float(s.get("CurrentWeight", s.get("InitialVariantWeight", 0.0)))
            p_weight = sum(float(v.get("CurrentWeight", 0.0)) for v in endpoint.get("ProductionVariants", []))
            shadow = Shadow(str(s["VariantName"]), s_weight / p_weight if p_weight > 0 else 0.0)
            revisions.append(
                self._revision_status(endpoint, {**s, "CurrentWeight": 0.0}, models.get(s["VariantName"]))
            )
        return ServiceStatus(
            name=service,
            url=self.url(service),
            revisions=tuple(revisions),
            weights={r.name: r.weight for r in revisions if r.weight > 0},
            shadow=shadow,
        )

    def services(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"MaxResults": 100}
            if self.prefix:
                params["NameContains"] = self.prefix
            if token:
                params["NextToken"] = token
            page = self._call(self.sm, "list_endpoints", **params)
            names += [
                e["EndpointName"][len(self.prefix) :]
                for e in page.get("Endpoints", [])
                if e["EndpointName"].startswith(self.prefix)
            ]
            token = page.get("NextToken")
            if not token:
                return sorted(names)

    def stats(self, service: str, cursor: int = 0) -> dict[str, Any]:
        """Per-revision CloudWatch aggregates since ``cursor`` (Unix seconds; 0 = the last 3 hours).

        No ``observations``: see the module docstring. The returned ``cursor`` is now.
        """
        if self.cloudwatch is None:
            raise ConfigError(
                "stats on SageMaker reads CloudWatch (AWS/SageMaker Invocations, Invocation5XXErrors, "
                "ModelLatency): give SageMakerEndpointCompute a cloudwatch client"
            )
        now = self._clock()
        endpoint = self._describe(service)
        variants = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])]
        variants += [v["VariantName"] for v in endpoint.get("ShadowProductionVariants", [])]
        start = max(float(cursor), now - 3 * 3600.0)
        result: dict[str, Any] = {
            "source": "cloudwatch",
            "window": {"start": start, "end": now},
            "revisions": {v: {k: 0.0 for k in _METRICS} for v in variants},
            "observations": [],
            "observations_note": "CloudWatch has no per-request observations; canary judges get none",
            "cursor": int(now),
        }
        if start >= now or not variants:
            return result
        name = self.endpoint_name(service)
        queries = []
        ids: dict[str, tuple[str, str]] = {}
        for i, variant in enumerate(variants):
            for j, (key, (metric, stat)) in enumerate(_METRICS.items()):
                qid = f"q{i}x{j}"
                ids[qid] = (variant, key)
                queries.append(
                    {
                        "Id": qid,
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/SageMaker",
                                "MetricName": metric,
                                "Dimensions": [
                                    {"Name": "EndpointName", "Value": name},
                                    {"Name": "VariantName", "Value": variant},
                                ],
                            },
                            "Period": 60,
                            "Stat": stat,
                        },
                    }
                )
        token: str | None = None
        sums: dict[tuple[str, str], list[float]] = {}
        while True:
            params: dict[str, Any] = {
                "MetricDataQueries": queries,
                "StartTime": datetime.fromtimestamp(start, UTC),
                "EndTime": datetime.fromtimestamp(now, UTC) + timedelta(seconds=60),
            }
            if token:
                params["NextToken"] = token
            page = self._call(self.cloudwatch, "get_metric_data", **params)
            for r in page.get("MetricDataResults", []):
                sums.setdefault(ids[r["Id"]], []).extend(float(x) for x in r.get("Values", []))
            token = page.get("NextToken")
            if not token:
                break
        for (variant, key), values in sums.items():
            if not values:
                continue
            stat = _METRICS[key][1]
            if stat == "Sum":
                result["revisions"][variant][key] = sum(values)
            elif stat == "Maximum":
                result["revisions"][variant][key] = max(values)
            else:  # the mean of the per-minute averages (not weighted by invocations)
                result["revisions"][variant][key] = sum(values) / len(values)
        for figures in result["revisions"].values():
            figures["failed"] = figures["errors_5xx"]
        return result

    def url(self, service: str) -> str:
        region = self.sm.meta.region_name
        return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{self.endpoint_name(service)}/invocations"
