"""``Compute`` for the chatbot on ECS Fargate behind an Application Load Balancer (CD-01).

Mapping (each line is one AWS concept):

* a *service* is a set of ECS services in ``cluster`` and the listener rules of ``listener_arn``
  named after it (``{name_prefix}{service}``; the prefix keeps environments apart);
* a *revision* is one ECS service ``{name_prefix}{service}--{revision}`` (service and revision
  names are letters, digits and single hyphens, so ``--`` separates them) running one revision of
  the task definition family ``{name_prefix}{service}`` (Fargate, ``awsvpc``, one container
  ``app``), registered in its own target group (type ``ip``, health check ``GET /readyz``,
  ``health_check_path``). The container image is ``revision.env["ECS_IMAGE"]`` or the
  constructor's ``image``: **the image holds the code**, the revision's artifact is not uploaded;
  its digest is recorded (container env ``MANGAASSIST_ARTIFACT_DIGEST``, service tag
  ``mangaassist:digest``) and ``status`` reads it back. The container's environment is the
  revision's ``env`` (less ``ECS_IMAGE``) plus ``MANGAASSIST_REVISION``, ``MANGAASSIST_SERVICE``,
  ``MANGAASSIST_APP``, ``MANGAASSIST_ENV``, ``workload_env`` (the workers' own aws settings,
  ``MANGAASSIST_AWS_SETTINGS``), ``MANGAASSIST_EMF=1`` (the workload writes its
  metrics as CloudWatch EMF lines: ``chatbot.emf``) and the digest. ``replicas`` is the desired task
  count at deploy, recorded (service tag ``mangaassist:replicas``) and read back by ``status`` while
  the revision is live, so a count autoscaling reached is not taken for the next revision's.
* *autoscaling* is Application Auto Scaling on each revision's own ECS service: with
  ``max_replicas`` (the factory's ``max_tasks``) above the revision's ``replicas``, ``deploy``
  registers the service (``ecs:service:DesiredCount``, resource ``service/{cluster}/{ecs service}``)
  as a scalable target from ``replicas`` to ``max_replicas`` with a target-tracking policy on
  ``ECSServiceAverageCPUUtilization`` at 60% (scale-out cooldown 60 s, scale-in 300 s); with
  ``max_replicas`` equal to ``replicas`` (the default) nothing is registered; below it the deploy is
  refused (``ConfigError``). ``retire`` deregisters the scalable target (Application Auto Scaling
  deletes its policy with it) before it scales the service to 0, so scaling does not fight the
  drain. CD-02's compute stack makes the cluster, listener, roles and security group, not the
  services nor their scaling.
* *weights* are the forward action of the service's **weighted rule** (priority from
  ``weights_priority_start``, 40000, upwards; conditions ``conditions[service]``, default
  ``path-pattern /*``): one target group per live revision with its weight, and
  ``TargetGroupStickinessConfig`` (``stickiness_s``, default 1 hour; 0 turns it off). ALB weights
  are integers 0..999: percentages are sent as they are when whole, else times 10 (0.1%
  resolution; finer is refused). ``set_weights`` is one ``ModifyRule`` call, which the ALB applies
  at once. Read back, a weight is its share of the rule's total, in percent.
* a *pin* is a rule of its own per revision (priority from ``pin_priority_start``, 100, upwards,
  so always before the weighted rule): the service's conditions plus ``X-MangaAssist-Revision:
  NAME`` (``HttpHeaderConfig``), forwarding to the revision's target group whatever its weight.
  It is created before the ECS service (ECS refuses a target group no load balancer uses) and is
  how smoke tests reach a revision at 0%: ``pin`` gives the service's URL and that header.
* *stickiness* is the ALB's target-group stickiness: a client that keeps the ``AWSALBTG`` cookie
  stays on the target group (revision) it got first, for ``stickiness_s``. It is the ALB's cookie,
  not ``X-Session-Id``: an API client that drops cookies is split per request. When a revision's
  target group leaves the action (retire), its clients are drawn again by weight on their next
  request; ECS does not count these moves (the local router does).
* ``deploy``: register the task definition, create the target group (tags ``mangaassist:*``), the
  pin rule, add the target group to the weighted rule at weight 0 (the service's first revision:
  create the rule with it at 100), then ``CreateService``, then the autoscaling (above). It waits
  (``poll_s``) until every desired task is a healthy target or ``timeout_s`` passes; then a revision
  with no healthy target is ``UNHEALTHY`` ("not ready within ..." with the targets' reasons), one
  with some is ``DEGRADED``. If a call fails half way, what was made for the revision is removed
  again (a failed autoscaling call, after ``CreateService``, leaves the revision running unscaled
  and raises; deploying it again registers the scaling). A live name deployed again returns its status if
  digest, app and env are the same (registering its autoscaling if it has none), otherwise
  ``EcsStateError`` naming what differs.
* ``retire``: its weight must be 0 and it must not be the service's last revision, unless
  ``last`` says the service may be left empty: then the weighted rule is deleted (no target group
  is left to forward to) and the listener's default action answers (CD-02's 503). The target
  group leaves the weighted rule, the pin rule is deleted, the target group's deregistration delay
  is set to ``drain_timeout_s`` (in-flight requests finish, the ALB's drain), the service's scalable
  target (if any) is deregistered and the ECS service is scaled to 0 (ECS deregisters each task,
  waits for the drain, then stops it). When no task runs (within ``drain_timeout_s``) the ECS
  service and the target group are deleted and the task definition revision deregistered:
  ``RETIRED``. Otherwise it is returned ``DRAINING`` and listed so; retiring it again finishes the
  job.
* health (``status``): from ``DescribeTargetHealth`` of the revision's target group and the ECS
  service: every desired task a ``healthy`` target: ``HEALTHY``; some: ``DEGRADED``; none and a
  target ``unhealthy`` or the deployment's ``rolloutState`` ``FAILED`` (the circuit breaker):
  ``UNHEALTHY`` with the ALB's or ECS's reason; none yet: ``STARTING``; scaled to 0 and out of the
  weighted rule: ``DRAINING``. Each target is a ``WorkerStatus`` (no pid; ``port``: the target's;
  ``healthy`` -> READY, ``initial`` -> STARTING, ``unhealthy`` -> FAILED, ``draining`` -> STOPPED).
* ``url``: ``base_url`` (the public URL, e.g. CloudFront's) when given, else the load balancer's
  DNS name with the listener's protocol and port.
* *request series* (what ``metrics = "amp"`` judges a canary by): with ``amp_remote_write_url`` (an
  Amazon Managed Prometheus workspace's ``.../api/v1/remote_write``, the factory's setting of that
  name) every revision's task definition gets a second, non-essential container ``collector``
  (``collector_image``, default ``DEFAULT_COLLECTOR_IMAGE``: the AWS Distro for OpenTelemetry
  collector) configured through its ``AOT_CONFIG_CONTENT`` (``collector_config``: a ``prometheus``
  receiver scraping the app's ``localhost:{container_port}/metrics`` every 15 s, the ``ecs`` resource
  detector, whose task ARN and other task labels keep each task's series apart, a
  ``prometheusremotewrite`` exporter to the workspace signed by the ``sigv4auth`` extension in
  ``region``, with the external label ``mangaassist_env``), and the app container gets
  ``MANGAASSIST_REQUEST_SERIES=1``: the worker records every request it answers and exports the
  router's ``mangaassist_router_*`` series (``platform.request_series``: also what a worker cannot
  see, which CloudWatch's ALB metrics hold). The task role needs ``aps:RemoteWrite`` (CD-02's compute
  stack grants it). Without the setting the task definition has the one container, as before. The
  setting is not part of a revision's identity: a live revision deployed again keeps the task
  definition it was registered with.

**Not supported** (``NotSupportedError``, a ``ConfigError``, raised rather than pretended):
shadows. An ALB has no request mirroring, so ``set_shadow`` refuses, naming it; ``clear_shadow``
has nothing to clear and returns; ``status`` reports no shadow. CD-01's shadow-free strategies
(canary, blue/green, with pinned smoke tests) need none; a shadow on AWS would need the workload or
a proxy (e.g. Envoy in the task) to mirror, which this provider does not claim.

**Dry run**: with ``dry_run=True`` (the factory sets it while a dry run is on; the clients are then
behind ``platform.aws.dryrun``'s recorder, which records every call that may change something
instead of making it) the provider does not wait for what it did not change: ``deploy`` returns
``STARTING`` with the reason "dry run: nothing was changed", ``retire`` does not wait for the drain,
a placeholder target group has no targets.

Errors: an unknown service, revision or AWS resource is ``NotFoundError``; bad input (names,
weights, a missing image) ``ConfigError``; an operation that does not fit the state (retiring a
weighted or the last revision, redeploying a name with other contents) ``EcsStateError``; any
other ``ClientError`` ``EcsError`` naming the operation and AWS's code and message.

Status: tested against moto's server (ECS, ELBv2 with weighted forward actions, stickiness, header
rules and target health, Application Auto Scaling's scalable targets and policies) in
``tests/contract/test_compute_contract.py`` and ``tests/contract/test_aws_providers.py``; moto runs
no tasks, so those tests register the targets ECS would (and nothing scales). It has not run against
a real AWS account yet.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform.aws.dryrun import is_placeholder
from mangaassist.platform.compute import (
    PIN_HEADER,
    Pin,
    Revision,
    RevisionHealth,
    RevisionStatus,
    ServiceStatus,
    Shadow,
    WorkerState,
    WorkerStatus,
    check_weights,
)

IMAGE_ENV = "ECS_IMAGE"
COLLECTOR = "collector"
DEFAULT_COLLECTOR_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
"""The AWS Distro for OpenTelemetry collector, by version tag (``amp_collector_image`` pins it by
digest: ``public.ecr.aws/aws-observability/aws-otel-collector@sha256:...``)."""
COLLECTOR_CONFIG_ENV = "AOT_CONFIG_CONTENT"
"""The ADOT collector reads its whole configuration (YAML) from this variable."""
SCRAPE_INTERVAL_S = 15
REQUEST_SERIES_ENV = "MANGAASSIST_REQUEST_SERIES"
"""``platform.request_series.ENABLE_ENV``: the worker exports its own request series."""
DIGEST_ENV = "MANGAASSIST_ARTIFACT_DIGEST"
CONTAINER = "app"
SEPARATOR = "--"
TAG_SERVICE = "mangaassist:service"
TAG_REVISION = "mangaassist:revision"
TAG_RULE = "mangaassist:rule"
TAG_DIGEST = "mangaassist:digest"
TAG_APP = "mangaassist:app"
TAG_ENV = "mangaassist:env"
TAG_REPLICAS = "mangaassist:replicas"
SCALABLE_DIMENSION = "ecs:service:DesiredCount"
CPU_TARGET_PERCENT = 60.0
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
DEFAULT_CONDITIONS: tuple[dict[str, Any], ...] = (
    {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}},
)
_NAME = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
_TG_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$")
_NOT_FOUND = {
    "TargetGroupNotFound",
    "TargetGroupNotFoundException",
    "RuleNotFound",
    "RuleNotFoundException",
    "ListenerNotFound",
    "ListenerNotFoundException",
    "LoadBalancerNotFound",
    "ServiceNotFoundException",
    "ClusterNotFoundException",
    "ObjectNotFoundException",
}
_TARGET_STATES = {
    "healthy": WorkerState.READY,
    "initial": WorkerState.STARTING,
    "unhealthy": WorkerState.FAILED,
    "unavailable": WorkerState.FAILED,
    "draining": WorkerState.STOPPED,
    "unused": WorkerState.STARTING,
}


class EcsError(MangaAssistError):
    """ECS or the load balancer refused a call; the message names the operation and AWS's code."""


class EcsStateError(MangaAssistError):
    """The operation does not fit the service as it is (retiring a weighted revision...)."""


class NotSupportedError(ConfigError):
    """The protocol asks for something this provider's AWS service cannot do (an ALB cannot mirror)."""


def check_name(kind: str, name: str, *, on: str = "ECS", longest: int = 100) -> str:
    """Service and revision names of the compute providers: letters, digits and single hyphens
    (``--`` is ECS's separator), at most ``longest`` characters (Lambda: 48, its function names
    allow 64 with the prefix)."""
    if not _NAME.match(name) or len(name) > longest:
        raise ConfigError(
            f"{kind} name {name!r} is not valid on {on} here (letters, digits and single hyphens, "
            f"starting and ending with a letter or digit, at most {longest})"
        )
    return name


def alb_weights(weights: Mapping[str, float]) -> dict[str, int]:
    """Percentages as ALB weights (integers 0..999): as they are when whole, else times 10."""
    for scale in (1, 10):
        scaled = {k: v * scale for k, v in weights.items()}
        if all(abs(v - round(v)) < 1e-6 for v in scaled.values()) and max(scaled.values(), default=0) <= 999:
            return {k: round(v) for k, v in scaled.items()}
    raise ConfigError(
        "ALB weights are whole numbers from 0 to 999: percentages finer than 0.1% cannot be sent ("
        + ", ".join(f"{k}={v:g}" for k, v in weights.items())
        + ")"
    )


def target_group_name(full: str) -> str:
    """``full`` when it is a valid target-group name (32 characters at most), else a shortened one
    ending in a digest of ``full``."""
    if _TG_NAME.match(full):
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    head = re.sub(r"[^a-zA-Z0-9-]", "-", full)[:23].strip("-") or "ma"
    return f"{head}-{digest}"


def _env_digest(env: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(env.items()))).encode()).hexdigest()[:16]


def _tags(
    pairs: Sequence[Mapping[str, str]] | None, key: str = "Key", value: str = "Value"
) -> dict[str, str]:
    return {str(p[key]): str(p[value]) for p in pairs or ()}


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Live:
    """One revision as ECS and the ALB know it."""

    name: str
    ecs: dict[str, Any]
    target_group: str
    tags: dict[str, str]

    @property
    def desired(self) -> int:
        return int(self.ecs.get("desiredCount", 0))

    @property
    def running(self) -> int:
        return int(self.ecs.get("runningCount", 0)) + int(self.ecs.get("pendingCount", 0))


@dataclass
class _Rules:
    """The service's weighted rule and pin rules on the listener, and the priorities taken."""

    weighted: dict[str, Any] | None = None
    pins: dict[str, dict[str, Any]] = field(default_factory=dict)
    taken: set[int] = field(default_factory=set)

    def weights(self) -> dict[str, int]:
        """Target group ARN -> ALB weight in the weighted rule's forward action."""
        if self.weighted is None:
            return {}
        for action in self.weighted.get("Actions", []):
            if action.get("Type") == "forward":
                groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
                if groups:
                    return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
                if action.get("TargetGroupArn"):
                    return {action["TargetGroupArn"]: 1}
        return {}


class EcsServiceCompute:
    """``Compute`` on ECS Fargate services behind an ALB listener; clients injected (boto3 ``ecs``
    and ``elbv2``, and ``application-autoscaling`` as ``autoscaling``; moto or stubbed ones in
    tests). See the module docstring for the mapping."""

    def __init__(
        self,
        ecs: Any,
        elbv2: Any,
        *,
        cluster: str,
        listener_arn: str,
        vpc_id: str,
        subnets: Sequence[str],
        security_groups: Sequence[str] = (),
        execution_role_arn: str | None = None,
        task_role_arn: str | None = None,
        image: str | None = None,
        environment: str = "",
        name_prefix: str = "",
        container_port: int = 8000,
        cpu: str = "512",
        memory: str = "1024",
        log_group: str | None = None,
        region: str | None = None,
        assign_public_ip: bool = False,
        health_check_path: str = "/readyz",
        conditions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        pin_priority_start: int = 100,
        weights_priority_start: int = 40000,
        stickiness_s: int = 3600,
        base_url: str | Mapping[str, str] | None = None,
        poll_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        dry_run: bool = False,
        workload_env: Mapping[str, str] | None = None,
        autoscaling: Any = None,
        max_replicas: int | None = None,
        amp_remote_write_url: str | None = None,
        collector_image: str = DEFAULT_COLLECTOR_IMAGE,
    ) -> None:
        if not subnets:
            raise ConfigError("EcsServiceCompute needs at least one subnet for the Fargate tasks")
        if not 0 <= stickiness_s <= 604800:
            raise ConfigError(f"stickiness_s {stickiness_s} is not between 0 and 604800 (7 days)")
        if max_replicas is not None and max_replicas < 1:
            raise ConfigError(f"max_replicas {max_replicas} is below 1")
        if amp_remote_write_url is not None:
            check_remote_write_url(amp_remote_write_url)
            if not region:
                raise ConfigError("amp_remote_write_url needs the region its requests are signed for")
            if not collector_image.strip():
                raise ConfigError("the collector image is empty (amp_collector_image)")
        self.ecs = ecs
        self.elb = elbv2
        self.cluster = cluster
        self.listener_arn = listener_arn
        self.vpc_id = vpc_id
        self.subnets = list(subnets)
        self.security_groups = list(security_groups)
        self.execution_role_arn = execution_role_arn
        self.task_role_arn = task_role_arn
        self.image = image
        self.environment = environment
        self.prefix = name_prefix
        self.container_port = container_port
        self.cpu = cpu
        self.memory = memory
        self.log_group = log_group
        self.region = region
        self.assign_public_ip = assign_public_ip
        self.health_check_path = health_check_path
        self.conditions = {k: [dict(c) for c in v] for k, v in (conditions or {}).items()}
        self.pin_priority_start = pin_priority_start
        self.weights_priority_start = weights_priority_start
        self.stickiness_s = stickiness_s
        self.base_url = base_url
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        self.dry_run = dry_run
        self.workload_env = dict(workload_env or {})
        """Set in every task's environment (the workers' own aws settings: ``platform.factory``)."""
        self.autoscaling = autoscaling
        """Application Auto Scaling (``application-autoscaling``); None: no revision is scaled."""
        self.max_replicas = max_replicas
        """The most tasks a revision scales to; None: its ``replicas`` (no scaling)."""
        self.amp_remote_write_url = amp_remote_write_url
        """The AMP workspace's remote-write URL; None: no collector in the tasks (module docstring)."""
        self.collector_image = collector_image
        self._url: str | None = None

    # ------------------------------------------------------------------ names and calls

    def family(self, service: str) -> str:
        return f"{self.prefix}{check_name('service', service)}"

    def ecs_service_name(self, service: str, revision: str) -> str:
        return f"{self.family(service)}{SEPARATOR}{check_name('revision', revision)}"

    def scaling_resource_id(self, service: str, revision: str) -> str:
        """The revision's ECS service as Application Auto Scaling names it."""
        cluster = self.cluster.rsplit("/", 1)[-1]  # a cluster ARN's name
        return f"service/{cluster}/{self.ecs_service_name(service, revision)}"

    def _scaling_max(self, revision: Revision) -> int:
        """The revision's autoscaling maximum (its replicas: no scaling); refused below its replicas."""
        top = revision.replicas if self.max_replicas is None else self.max_replicas
        if top < revision.replicas:
            raise ConfigError(
                f"revision {revision.name}: max_replicas ({top}, [environments.{self.environment}.aws] "
                f"max_tasks) is below its replicas ({revision.replicas})"
            )
        if top > revision.replicas and self.autoscaling is None:
            raise ConfigError(
                f"revision {revision.name}: scaling to {top} tasks needs an application-autoscaling client"
            )
        return top

    def _call(self, client: Any, op: str, **params: Any) -> Any:
        try:
            return getattr(client, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            detail = f"{op}: {err.get('Code', '?')}: {err.get('Message', exc)}"
            missing = self._missing_setting(str(err.get("Code", "")))
            if missing is not None:
                raise ConfigError(f"{missing} ({detail})") from None
            if err.get("Code") in _NOT_FOUND:
                raise NotFoundError(detail) from None
            raise EcsError(detail) from None

    def _missing_setting(self, code: str) -> str | None:
        """What the environment lacks when AWS says its cluster or listener is not there: the
        resources CD-02's compute stack creates, named with the setting that points at them."""
        where = f"[environments.{self.environment}.aws]"
        if code == "ClusterNotFoundException":
            what = f"the ECS cluster {self.cluster} ({where} cluster) does not exist"
        elif code in ("ListenerNotFound", "ListenerNotFoundException"):
            what = f"the load balancer listener {self.listener_arn} ({where} listener_arn) does not exist"
        else:
            return None
        return (
            f"{what}: the infrastructure pipeline's compute stack creates it "
            f"(`mangaassist deploy infra --env {self.environment}`), then set its name there"
        )

    def _conditions(self, service: str) -> list[dict[str, Any]]:
        return [dict(c) for c in self.conditions.get(service, DEFAULT_CONDITIONS)]

    def _forward(self, groups: Mapping[str, int]) -> list[dict[str, Any]]:
        config: dict[str, Any] = {
            "TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in groups.items()],
            "TargetGroupStickinessConfig": {"Enabled": self.stickiness_s > 0}
            | ({"DurationSeconds": self.stickiness_s} if self.stickiness_s > 0 else {}),
        }
        return [{"Type": "forward", "ForwardConfig": config}]

    # ------------------------------------------------------------------ reading

    def _revisions(self, service: str) -> dict[str, _Live]:
        """The service's ECS services (ACTIVE or DRAINING) by revision name."""
        head = f"{self.family(service)}{SEPARATOR}"
        arns: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"cluster": self.cluster, "maxResults": 100}
            if token:
                params["nextToken"] = token
            page = self._call(self.ecs, "list_services", **params)
            arns += [a for a in page.get("serviceArns", []) if a.rsplit("/", 1)[-1].startswith(head)]
            token = page.get("nextToken")
            if not token:
                break
        live: dict[str, _Live] = {}
        for chunk in _chunks(arns, 10):
            found = self._call(
                self.ecs, "describe_services", cluster=self.cluster, services=list(chunk), include=["TAGS"]
            )
            for svc in found.get("services", []):
                if svc.get("status") == "INACTIVE":
                    continue
                name = str(svc["serviceName"])[len(head) :]
                groups = [
                    lb["targetGroupArn"] for lb in svc.get("loadBalancers", []) if lb.get("targetGroupArn")
                ]
                live[name] = _Live(
                    name, svc, groups[0] if groups else "", _tags(svc.get("tags"), "key", "value")
                )
        return live

    def _rules(self, service: str) -> _Rules:
        rules: list[dict[str, Any]] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"ListenerArn": self.listener_arn, "PageSize": 400}
            if marker:
                params["Marker"] = marker
            page = self._call(self.elb, "describe_rules", **params)
            rules += page.get("Rules", [])
            marker = page.get("NextMarker")
            if not marker:
                break
        out = _Rules()
        mine = self.family(service)
        own = [r for r in rules if not r.get("IsDefault")]
        out.taken = {int(r["Priority"]) for r in own if str(r.get("Priority", "")).isdigit()}
        by_arn = {r["RuleArn"]: r for r in own}
        for chunk in _chunks(list(by_arn), 20):
            described = self._call(self.elb, "describe_tags", ResourceArns=list(chunk))
            for d in described.get("TagDescriptions", []):
                tags = _tags(d.get("Tags"))
                if tags.get(TAG_SERVICE) != mine:
                    continue
                role = tags.get(TAG_RULE, "")
                if role == "weights":
                    out.weighted = by_arn[d["ResourceArn"]]
                elif role.startswith("pin:"):
                    out.pins[role[4:]] = by_arn[d["ResourceArn"]]
        return out

    def _priority(self, rules: _Rules, start: int) -> int:
        priority = start
        while priority in rules.taken:
            priority += 1
        if priority > 50000:
            raise EcsStateError(f"listener {self.listener_arn} has no free rule priority from {start}")
        rules.taken.add(priority)
        return priority

    def _targets(self, target_group: str) -> list[dict[str, Any]]:
        if not target_group or is_placeholder(target_group):
            return []
        found = self._call(self.elb, "describe_target_health", TargetGroupArn=target_group)
        return list(found.get("TargetHealthDescriptions", []))

    def _health(
        self, live: _Live, in_rule: bool
    ) -> tuple[RevisionHealth, str | None, tuple[WorkerStatus, ...]]:
        targets = self._targets(live.target_group)
        workers = tuple(
            WorkerStatus(
                pid=None,
                port=int(t.get("Target", {}).get("Port") or self.container_port),
                state=_TARGET_STATES.get(str(t.get("TargetHealth", {}).get("State")), WorkerState.STARTING),
                restarts=0,
                reason=t.get("TargetHealth", {}).get("Description")
                or t.get("TargetHealth", {}).get("Reason"),
            )
            for t in targets
        )
        healthy = sum(w.state is WorkerState.READY for w in workers)
        if live.ecs.get("status") == "DRAINING" or (live.desired == 0 and not in_rule):
            return RevisionHealth.DRAINING, f"{live.running} task(s) still running", workers
        failed = [d for d in live.ecs.get("deployments", []) if d.get("rolloutState") == "FAILED"]
        bad = [w.reason or "failing health checks" for w in workers if w.state is WorkerState.FAILED]
        if live.desired > 0 and healthy >= live.desired:
            return RevisionHealth.HEALTHY, None, workers
        if healthy > 0:
            return RevisionHealth.DEGRADED, f"{healthy} of {live.desired} target(s) healthy", workers
        if failed:
            return (
                RevisionHealth.UNHEALTHY,
                str(failed[0].get("rolloutStateReason") or "deployment failed"),
                workers,
            )
        if bad:
            return RevisionHealth.UNHEALTHY, "; ".join(sorted(set(bad))), workers
        return RevisionHealth.STARTING, "no healthy target yet", workers

    def _status_of(self, live: _Live, rules: _Rules) -> RevisionStatus:
        weights = rules.weights()
        total = sum(weights.values())
        health, reason, workers = self._health(live, live.target_group in weights)
        share = weights.get(live.target_group, 0) * 100.0 / total if total else 0.0
        # the count deployed, not the one autoscaling reached (0 once scaled to 0 for its retirement)
        recorded = live.tags.get(TAG_REPLICAS, "")
        replicas = int(recorded) if recorded.isdigit() and live.desired > 0 else live.desired
        return RevisionStatus(
            name=live.name,
            digest=live.tags.get(TAG_DIGEST, ""),
            replicas=replicas,
            health=health,
            reason=reason,
            weight=share,
            workers=workers,
        )

    # ------------------------------------------------------------------ Compute

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        name = self.ecs_service_name(service, revision.name)
        if revision.replicas < 1:
            raise ConfigError(f"revision {revision.name}: replicas must be at least 1")
        image = revision.env.get(IMAGE_ENV) or self.image
        if not image:
            raise ConfigError(
                f"revision {revision.name}: no container image (set env {IMAGE_ENV} or the environment's "
                "[aws] app_image)"
            )
        env = {k: v for k, v in revision.env.items() if k != IMAGE_ENV}
        top = self._scaling_max(revision)
        tags = {
            TAG_SERVICE: self.family(service),
            TAG_REVISION: revision.name,
            TAG_DIGEST: revision.artifact.digest,
            TAG_APP: revision.app,
            TAG_ENV: _env_digest({**env, IMAGE_ENV: image}),
            TAG_REPLICAS: str(revision.replicas),
        }
        live = self._revisions(service)
        if revision.name in live:
            return self._redeploy(service, live[revision.name], tags, timeout_s, top)
        rules = self._rules(service)
        if rules.weighted is None and live and all(lv.desired == 0 for lv in live.values()):
            names = ", ".join(sorted(live))
            raise EcsStateError(
                f"service {service}'s last revision ({names}) was retired and is still draining: "
                "retire it again to finish, then deploy"
            )
        if rules.weighted is None and live:
            raise EcsStateError(
                f"service {service} has revisions ({', '.join(sorted(live))}) but no weighted rule on "
                f"{self.listener_arn}: repair the listener before deploying"
            )
        task_definition = self._register(service, revision, image, env)
        made: dict[str, str] = {}
        try:
            group = self._call(
                self.elb,
                "create_target_group",
                Name=target_group_name(f"{self.prefix}{service}-{revision.name}"),
                Protocol="HTTP",
                Port=self.container_port,
                VpcId=self.vpc_id,
                TargetType="ip",
                HealthCheckPath=self.health_check_path,
                Matcher={"HttpCode": "200"},
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )["TargetGroups"][0]["TargetGroupArn"]
            made["target_group"] = group
            made["pin"] = self._create_rule(
                service,
                rules,
                revision.name,
                self.pin_priority_start,
                f"pin:{revision.name}",
                [*self._conditions(service), _pin_condition(revision.name)],
                [{"Type": "forward", "TargetGroupArn": group}],
            )
            if rules.weighted is None:
                made["weighted"] = self._create_rule(
                    service,
                    rules,
                    revision.name,
                    self.weights_priority_start,
                    "weights",
                    self._conditions(service),
                    self._forward({group: 100}),
                )
            else:
                weights = {**rules.weights(), group: 0}
                self._call(
                    self.elb, "modify_rule", RuleArn=rules.weighted["RuleArn"], Actions=self._forward(weights)
                )
                made["in_weighted"] = rules.weighted["RuleArn"]
            self._create_service(name, task_definition, group, revision.replicas, tags)
        except BaseException:
            self._undo(rules, made)
            raise
        if top > revision.replicas:
            self._autoscale(service, revision.name, revision.replicas, top)
        if self.dry_run:
            return RevisionStatus(
                revision.name,
                revision.artifact.digest,
                revision.replicas,
                RevisionHealth.STARTING,
                "dry run: nothing was changed",
                100.0 if "weighted" in made else 0.0,
                (),
            )
        return self._wait(service, revision.name, timeout_s)

    def _redeploy(
        self, service: str, live: _Live, tags: Mapping[str, str], timeout_s: float, top: int
    ) -> RevisionStatus:
        differs = [
            what
            for what, key in (("artifact digest", TAG_DIGEST), ("app", TAG_APP), ("env", TAG_ENV))
            if live.tags.get(key) != tags[key]
        ]
        if differs:
            raise EcsStateError(
                f"revision {live.name} of {service} already runs with another {', '.join(differs)}; "
                "deploy it under another name or retire it first"
            )
        if live.desired == 0:
            raise EcsStateError(
                f"revision {live.name} of {service} is being retired; retire it again to finish"
            )
        replicas = int(tags[TAG_REPLICAS])
        if top > replicas and not self._scalable_target(service, live.name):
            self._autoscale(service, live.name, replicas, top)  # a deploy that failed at its scaling
        return self._wait(service, live.name, timeout_s)

    def _autoscale(self, service: str, revision: str, replicas: int, top: int) -> None:
        """The revision's ECS service as a scalable target (``replicas`` to ``top`` tasks) and its
        target-tracking policy on the service's average CPU."""
        resource = self.scaling_resource_id(service, revision)
        where = {"ServiceNamespace": "ecs", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION}
        self._call(
            self.autoscaling, "register_scalable_target", **where, MinCapacity=replicas, MaxCapacity=top
        )
        self._call(
            self.autoscaling,
            "put_scaling_policy",
            **where,
            PolicyName=f"{self.ecs_service_name(service, revision)}-cpu",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": CPU_TARGET_PERCENT,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
                "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            },
        )

    def _scalable_target(self, service: str, revision: str) -> dict[str, Any] | None:
        """The revision's scalable target, None without one (or without an autoscaling client)."""
        if self.autoscaling is None:
            return None
        found = self._call(
            self.autoscaling,
            "describe_scalable_targets",
            ServiceNamespace="ecs",
            ResourceIds=[self.scaling_resource_id(service, revision)],
            ScalableDimension=SCALABLE_DIMENSION,
        )
        targets = found.get("ScalableTargets") or []
        return dict(targets[0]) if targets else None

    def _register(self, service: str, revision: Revision, image: str, env: Mapping[str, str]) -> str:
        environment = {
            **self.workload_env,
            **env,
            "MANGAASSIST_REVISION": revision.name,
            "MANGAASSIST_SERVICE": service,
            "MANGAASSIST_APP": revision.app,
            "MANGAASSIST_PROVIDER": "aws",
            "MANGAASSIST_EMF": "1",  # the workload's metrics as EMF lines (chatbot.emf)
            DIGEST_ENV: revision.artifact.digest,
        }
        if self.environment:
            environment["MANGAASSIST_ENV"] = self.environment
        if self.amp_remote_write_url:
            environment[REQUEST_SERIES_ENV] = "1"  # the collector below scrapes them
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": image,
            "essential": True,
            "portMappings": [{"containerPort": self.container_port, "protocol": "tcp"}],
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        }
        if self.log_group:
            container["logConfiguration"] = self._logs(f"{self.family(service)}/{revision.name}")
        containers = [container]
        if self.amp_remote_write_url:
            containers.append(self._collector(service, revision.name))
        params: dict[str, Any] = {
            "family": self.family(service),
            "networkMode": "awsvpc",
            "requiresCompatibilities": ["FARGATE"],
            "cpu": self.cpu,
            "memory": self.memory,
            "containerDefinitions": containers,
            "tags": [{"key": TAG_REVISION, "value": revision.name}],
        }
        if self.execution_role_arn:
            params["executionRoleArn"] = self.execution_role_arn
        if self.task_role_arn:
            params["taskRoleArn"] = self.task_role_arn
        answer = self._call(self.ecs, "register_task_definition", **params)
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def _logs(self, prefix: str) -> dict[str, Any]:
        return {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": self.log_group,
                "awslogs-stream-prefix": prefix,
                **({"awslogs-region": self.region} if self.region else {}),
            },
        }

    def _collector(self, service: str, revision: str) -> dict[str, Any]:
        """The ADOT collector container that remote-writes the app's request series to AMP."""
        assert self.amp_remote_write_url is not None and self.region is not None  # checked in __init__
        config = collector_config(
            self.amp_remote_write_url,
            self.region,
            self.container_port,
            job=self.family(service),
            environment=self.environment,
        )
        container: dict[str, Any] = {
            "name": COLLECTOR,
            "image": self.collector_image,
            "essential": False,  # without it the app still serves; the judge just sees no new scrape
            "environment": [{"name": COLLECTOR_CONFIG_ENV, "value": config}],
        }
        if self.log_group:
            container["logConfiguration"] = self._logs(f"{self.family(service)}/{revision}/{COLLECTOR}")
        return container

    def _create_rule(
        self,
        service: str,
        rules: _Rules,
        revision: str,
        start: int,
        role: str,
        conditions: list[dict[str, Any]],
        actions: list[dict[str, Any]],
    ) -> str:
        answer = self._call(
            self.elb,
            "create_rule",
            ListenerArn=self.listener_arn,
            Priority=self._priority(rules, start),
            Conditions=conditions,
            Actions=actions,
            Tags=[
                {"Key": TAG_SERVICE, "Value": self.family(service)},
                {"Key": TAG_RULE, "Value": role},
                {"Key": TAG_REVISION, "Value": revision},
            ],
        )
        return str(answer["Rules"][0]["RuleArn"])

    def _create_service(
        self, name: str, task_definition: str, group: str, replicas: int, tags: Mapping[str, str]
    ) -> None:
        network = {
            "subnets": self.subnets,
            "assignPublicIp": "ENABLED" if self.assign_public_ip else "DISABLED",
        }
        if self.security_groups:
            network["securityGroups"] = self.security_groups
        self._call(
            self.ecs,
            "create_service",
            cluster=self.cluster,
            serviceName=name,
            taskDefinition=task_definition,
            desiredCount=replicas,
            launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": network},
            loadBalancers=[
                {"targetGroupArn": group, "containerName": CONTAINER, "containerPort": self.container_port}
            ],
            healthCheckGracePeriodSeconds=30,
            deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": False}},
            tags=[{"key": k, "value": v} for k, v in tags.items()],
        )

    def _undo(self, rules: _Rules, made: Mapping[str, str]) -> None:
        """Remove what a failed deploy made (best effort: the first error is what is raised)."""
        try:
            if "in_weighted" in made and rules.weighted is not None:
                self._call(
                    self.elb,
                    "modify_rule",
                    RuleArn=made["in_weighted"],
                    Actions=self._forward(rules.weights()),
                )
            for key in ("weighted", "pin"):
                if key in made:
                    self._call(self.elb, "delete_rule", RuleArn=made[key])
            if "target_group" in made:
                self._call(self.elb, "delete_target_group", TargetGroupArn=made["target_group"])
        except MangaAssistError:
            pass

    def _wait(self, service: str, revision: str, timeout_s: float) -> RevisionStatus:
        deadline = self._clock() + timeout_s
        while True:
            live = self._revisions(service).get(revision)
            if live is None:
                raise NotFoundError(
                    f"service {service} has no revision {revision!r} (its ECS service is gone)"
                )
            status = self._status_of(live, self._rules(service))
            if status.health is RevisionHealth.HEALTHY:
                return status
            if self._clock() >= deadline:
                if status.health in {RevisionHealth.STARTING, RevisionHealth.UNHEALTHY}:
                    why = status.reason or "no healthy target"
                    return _replace(
                        status, RevisionHealth.UNHEALTHY, f"not ready within {timeout_s:g}s: {why}"
                    )
                return status
            self._sleep(self.poll_s)

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        check_weights(weights)
        live = self._revisions(service)
        for rev in weights:
            if rev not in live or live[rev].desired == 0:
                raise NotFoundError(
                    f"service {service} has no live revision {rev!r} "
                    f"(have: {', '.join(sorted(live)) or 'none'})"
                )
        rules = self._rules(service)
        if rules.weighted is None:
            raise NotFoundError(
                f"service {service} has no weighted rule on {self.listener_arn} (deploy it first)"
            )
        in_rule = rules.weights()
        alb = alb_weights(
            {rev: float(weights.get(rev, 0.0)) for rev, lv in live.items() if lv.target_group in in_rule}
        )
        groups = {live[rev].target_group: w for rev, w in alb.items()}
        self._call(self.elb, "modify_rule", RuleArn=rules.weighted["RuleArn"], Actions=self._forward(groups))
        return {rev: float(w) for rev, w in weights.items() if w > 0}

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        raise NotSupportedError(
            f"shadow of {service} on ECS behind an ALB: an Application Load Balancer cannot mirror requests "
            "(no shadow traffic on this provider; use a canary with pinned smoke tests)"
        )

    def clear_shadow(self, service: str) -> None:
        """Nothing to clear: this provider never mirrors."""

    def pin(self, service: str, revision: str) -> Pin:
        """The service's URL (the ALB's) and ``X-MangaAssist-Revision: NAME``, which the revision's
        pin rule forwards to its target group."""
        live = self._revisions(service)
        if revision not in live or live[revision].desired == 0:
            raise NotFoundError(f"service {service} has no live revision {revision!r}")
        if not self.dry_run and revision not in self._rules(service).pins:
            raise EcsStateError(f"revision {revision} of {service} has no pin rule on {self.listener_arn}")
        return Pin(self.url(service), {PIN_HEADER: revision})

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        live = self._revisions(service)
        mine = live.get(revision)
        if mine is None:
            raise NotFoundError(f"service {service} has no revision {revision!r}")
        rules = self._rules(service)
        weights = rules.weights()
        emptying = last and set(live) == {revision}  # the service is left with none (``Compute.retire``)
        if weights.get(mine.target_group, 0) > 0 and not emptying:
            total = sum(weights.values())
            raise EcsStateError(
                f"revision {revision} still has weight {weights[mine.target_group] * 100.0 / total:g}%; "
                "move it to 0 first"
            )
        keep = {arn: w for arn, w in weights.items() if arn != mine.target_group}
        if not keep and not emptying:
            raise EcsStateError(
                f"revision {revision} is the only revision of {service}; it cannot be retired"
            )
        if emptying and rules.weighted is not None:
            # no target group left to forward to: the rule goes, and the listener's default answers
            self._call(self.elb, "delete_rule", RuleArn=rules.weighted["RuleArn"])
        elif mine.target_group in weights and rules.weighted is not None:
            self._call(
                self.elb, "modify_rule", RuleArn=rules.weighted["RuleArn"], Actions=self._forward(keep)
            )
        if revision in rules.pins:
            self._call(self.elb, "delete_rule", RuleArn=rules.pins[revision]["RuleArn"])
        if mine.target_group:
            delay = max(0, min(3600, round(drain_timeout_s)))
            self._call(
                self.elb,
                "modify_target_group_attributes",
                TargetGroupArn=mine.target_group,
                Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}],
            )
        name = self.ecs_service_name(service, revision)
        if self._scalable_target(service, revision) is not None:
            # before the scale to 0: a scalable target would raise the count back to its minimum
            self._call(
                self.autoscaling,
                "deregister_scalable_target",
                ServiceNamespace="ecs",
                ResourceId=self.scaling_resource_id(service, revision),
                ScalableDimension=SCALABLE_DIMENSION,
            )
        if mine.desired > 0:
            self._call(self.ecs, "update_service", cluster=self.cluster, service=name, desiredCount=0)
        deadline = self._clock() + drain_timeout_s
        while not self.dry_run:
            now = self._revisions(service).get(revision)
            if now is None or now.running == 0:
                break
            if self._clock() >= deadline:
                return RevisionStatus(
                    revision,
                    mine.tags.get(TAG_DIGEST, ""),
                    0,
                    RevisionHealth.DRAINING,
                    f"{now.running} task(s) still draining after {drain_timeout_s:g}s; "
                    "retire again to finish",
                    0.0,
                    (),
                )
            self._sleep(self.poll_s)
        self._call(self.ecs, "delete_service", cluster=self.cluster, service=name, force=True)
        if mine.target_group:
            self._call(self.elb, "delete_target_group", TargetGroupArn=mine.target_group)
        task_definition = mine.ecs.get("taskDefinition")
        if task_definition:
            self._call(self.ecs, "deregister_task_definition", taskDefinition=task_definition)
        return RevisionStatus(
            revision, mine.tags.get(TAG_DIGEST, ""), 0, RevisionHealth.RETIRED, None, 0.0, ()
        )

    def status(self, service: str) -> ServiceStatus:
        live = self._revisions(service)
        rules = self._rules(service)
        if not live and rules.weighted is None:
            raise NotFoundError(f"no service {service!r} in ECS cluster {self.cluster}")
        revisions = tuple(self._status_of(lv, rules) for _, lv in sorted(live.items()))
        return ServiceStatus(
            name=service,
            url=self.url(service),
            revisions=revisions,
            weights={r.name: r.weight for r in revisions if r.weight > 0},
            shadow=None,
        )

    def services(self) -> list[str]:
        names: set[str] = set()
        token: str | None = None
        while True:
            params: dict[str, Any] = {"cluster": self.cluster, "maxResults": 100}
            if token:
                params["nextToken"] = token
            page = self._call(self.ecs, "list_services", **params)
            for arn in page.get("serviceArns", []):
                name = arn.rsplit("/", 1)[-1]
                if name.startswith(self.prefix) and SEPARATOR in name:
                    names.add(name[len(self.prefix) :].split(SEPARATOR, 1)[0])
            token = page.get("nextToken")
            if not token:
                return sorted(names)

    def url(self, service: str) -> str:
        if isinstance(self.base_url, str):
            return self.base_url
        if isinstance(self.base_url, Mapping) and service in self.base_url:
            return str(self.base_url[service])
        if self._url is None:
            listener = self._call(self.elb, "describe_listeners", ListenerArns=[self.listener_arn])[
                "Listeners"
            ][0]
            balancer = self._call(
                self.elb, "describe_load_balancers", LoadBalancerArns=[listener["LoadBalancerArn"]]
            )["LoadBalancers"][0]
            scheme = str(listener.get("Protocol", "HTTP")).lower()
            port = int(listener.get("Port", 80))
            default = {"http": 80, "https": 443}.get(scheme)
            self._url = f"{scheme}://{balancer['DNSName']}" + ("" if port == default else f":{port}")
        return self._url

    def alb_dimensions(self, service: str) -> dict[str, dict[str, str]]:
        """CloudWatch dimensions (``LoadBalancer``, ``TargetGroup``) of each live revision's target
        group: what ``metrics_cloudwatch`` reads the ALB's per-revision metrics by."""
        balancer = _dimension(self.listener_arn, "listener/")
        balancer = "/".join(balancer.split("/")[:3])  # app/NAME/ID (the listener's id dropped)
        return {
            name: {"LoadBalancer": balancer, "TargetGroup": _dimension(lv.target_group, "")}
            for name, lv in self._revisions(service).items()
            if lv.target_group
        }


def check_remote_write_url(url: str) -> str:
    """An AMP workspace's remote-write URL (``https://.../workspaces/WS_ID/api/v1/remote_write``)."""
    if not url.startswith("https://") or not url.rstrip("/").endswith("/api/v1/remote_write"):
        raise ConfigError(
            f"amp_remote_write_url {url!r} is not a remote-write URL (expected "
            "https://aps-workspaces.REGION.amazonaws.com/workspaces/WS_ID/api/v1/remote_write)"
        )
    return url


def collector_config(
    remote_write_url: str,
    region: str,
    container_port: int,
    *,
    job: str = "mangaassist",
    environment: str = "",
    scrape_interval_s: int = SCRAPE_INTERVAL_S,
) -> str:
    """The ADOT collector's configuration (YAML, for ``AOT_CONFIG_CONTENT``): scrape the app in the
    same task (``localhost``: ``awsvpc`` tasks share one network namespace) and remote-write what it
    exports to the AMP workspace, signed with SigV4 (the task role's credentials).

    The ``ecs`` resource detector reads the task's metadata endpoint; with
    ``resource_to_telemetry_conversion`` its attributes (the task ARN among them) become labels of
    every series, so the tasks of one revision (each scrapes ``localhost:PORT``, the same target)
    stay distinct series, which ``platform.prometheus`` sums by revision. ``mangaassist_env`` names
    the environment on every series written (the reader does not filter on it: one workspace per
    environment)."""
    interval = f"{scrape_interval_s}s"
    exporter: dict[str, Any] = {
        "endpoint": check_remote_write_url(remote_write_url),
        "auth": {"authenticator": "sigv4auth"},
        "resource_to_telemetry_conversion": {"enabled": True},
    }
    if environment:
        exporter["external_labels"] = {"mangaassist_env": environment}
    config: dict[str, Any] = {
        "extensions": {"sigv4auth": {"region": region, "service": "aps"}},
        "receivers": {
            "prometheus": {
                "config": {
                    "global": {"scrape_interval": interval, "scrape_timeout": "10s"},
                    "scrape_configs": [
                        {
                            "job_name": job,
                            "metrics_path": "/metrics",
                            "scrape_interval": interval,
                            "static_configs": [{"targets": [f"localhost:{container_port}"]}],
                        }
                    ],
                }
            }
        },
        "processors": {
            "resourcedetection": {"detectors": ["env", "ecs"], "timeout": "5s", "override": False},
            "batch": {"timeout": "10s"},
        },
        "exporters": {"prometheusremotewrite": exporter},
        "service": {
            "extensions": ["sigv4auth"],
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["resourcedetection", "batch"],
                    "exporters": ["prometheusremotewrite"],
                }
            },
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def _dimension(arn: str, after: str) -> str:
    """The part of an ELB ARN CloudWatch uses as a dimension (``targetgroup/NAME/ID``, ``app/NAME/ID``)."""
    resource = arn.split(":", 5)[-1]
    return resource.split(after, 1)[1] if after and after in resource else resource


def _pin_condition(revision: str) -> dict[str, Any]:
    return {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": PIN_HEADER, "Values": [revision]}}


def _replace(status: RevisionStatus, health: RevisionHealth, reason: str) -> RevisionStatus:
    return RevisionStatus(
        status.name, status.digest, status.replicas, health, reason, status.weight, status.workers
    )
