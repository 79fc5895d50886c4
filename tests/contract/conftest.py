"""The two sides the ``Compute`` and ``Metrics`` contract suites run against.

``local``: a real control plane (a background process, one for the session) running the platform's
test workload (``platform.local.testing_app``); ``LocalCompute`` and ``RouterMetrics`` over its
control API; traffic is real HTTP through the service's router.

``aws``: ``EcsServiceCompute`` and ``CloudWatchMetrics`` on moto's server process (one for the
session: a VPC, two subnets, a security group, an ALB and its listener, an ECS cluster); each test
gets its own name prefix. moto runs no tasks, so ``FakeEcsAgent`` does what ECS would do on each
poll of the provider: register a target (an IP) in the revision's target group for every desired
task, none for a revision whose workload never gets ready (``TESTAPP_NEVER_READY``), and
deregister the targets of a service scaled to 0. Traffic is what the ALB would publish for it
(``AWS/ApplicationELB`` per target group) plus the workload's EMF quality flags, written with
``PutMetricData`` at a fake clock's time; ``settle`` moves that clock past the provider's settle
delay. ``routed_to`` evaluates the listener's rules as the ALB does (priority order, path and
header conditions, the forward action) on what moto stored.

``lambda``: ``LambdaAliasCompute`` on the same moto server (``tests/moto_server.py`` gives function
URL configs AWS's per-alias meaning). moto invokes nothing and serves no function URL over HTTP, so
``routed_to`` and ``reached_by`` read where Lambda would send a request from what moto stored.

``reached_by(service, pin)`` is where a request sent as ``Compute.pin`` says goes: locally a real
request to the pin's URL with its headers (the answer names the revision that served it).

Each test uses services of its own (declared in the local side's ``mangaassist.toml``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

import boto3
import httpx
import pytest

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import NotFoundError
from mangaassist.platform.artifacts import pack_source
from mangaassist.platform.aws.compute_ecs import EcsServiceCompute
from mangaassist.platform.aws.compute_lambda import LambdaAliasCompute
from mangaassist.platform.aws.dryrun import DryRun
from mangaassist.platform.aws.metrics_amp import AmpMetrics
from mangaassist.platform.aws.metrics_cloudwatch import CloudWatchMetrics, sources_of
from mangaassist.platform.compute import PIN_HEADER, Compute, Pin, Revision
from mangaassist.platform.local.client import LocalCompute, read_pid, start_control_plane, stop_control_plane
from mangaassist.platform.local.metrics import RouterMetrics
from mangaassist.platform.local.monitoring import LocalRuleHost
from mangaassist.platform.metrics import Metrics
from mangaassist.platform.settings import load_settings
from tests.moto_server import CREDENTIALS, client, moto_server

ROOT = Path(__file__).parents[2]
TEST_APP = "mangaassist.platform.local.testing_app:create_app"
SERVICES = ("first", "weights", "pin", "retire", "unready", "counts", "last")
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mangaassist-chatbot:test"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/mangaassist-task-execution"
SETTLE_S = 180.0
PERIOD_S = 60


class Side(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def compute(self) -> Compute: ...

    @property
    def metrics(self) -> Metrics: ...

    def revision(self, name: str, **env: str) -> Revision: ...

    def traffic(self, service: str, revision: str, n: int, *, failed: int = 0, fallback: int = 0) -> None:
        """``n`` unpinned chat requests served by ``revision`` (all new conversations go to it),
        ``failed`` of them answered 5xx (the revision's own doing), ``fallback`` with the flag."""

    def settle(self) -> None:
        """Let the metrics provider see everything sent so far."""

    def routed_to(self, service: str, headers: Mapping[str, str]) -> str | None:
        """The revision a request with ``headers`` reaches (None: no revision serves it)."""

    def reached_by(self, service: str, pin: Pin) -> str | None:
        """The revision a request sent to ``pin.url`` with ``pin.headers`` reaches (None: none)."""


# -- local ---------------------------------------------------------------------------------------


@dataclass
class LocalSide:
    compute: LocalCompute
    metrics: RouterMetrics
    artifact: Artifact
    name: str = "local"

    def revision(self, name: str, **env: str) -> Revision:
        return Revision(name, self.artifact, TEST_APP, env)

    def traffic(self, service: str, revision: str, n: int, *, failed: int = 0, fallback: int = 0) -> None:
        url = self.compute.url(service).rstrip("/") + "/v1/chat"
        with httpx.Client(timeout=10) as http:
            for i in range(n):
                headers = {"X-Test-Flags": "fallback"} if i < fallback else {}
                answer = http.post(url, json={"message": "Frieren 5?"}, headers=headers)
                assert answer.headers.get(PIN_HEADER) == revision, answer.headers

    def settle(self) -> None:
        """The routers record each request before answering it: nothing to wait for."""

    def routed_to(self, service: str, headers: Mapping[str, str]) -> str | None:
        answer = httpx.post(
            self.compute.url(service).rstrip("/") + "/v1/chat", json={"message": "hi"}, headers=dict(headers)
        )
        if answer.status_code == 404:
            return None
        served = answer.headers.get(PIN_HEADER)
        return str(served) if served else None

    def reached_by(self, service: str, pin: Pin) -> str | None:
        """A real request to the pin's URL: the answer names the revision that served it."""
        answer = httpx.post(
            pin.url.rstrip("/") + "/v1/chat", json={"message": "hi"}, headers=dict(pin.headers)
        )
        if answer.status_code == 404:
            return None
        served = answer.headers.get(PIN_HEADER)
        return str(served) if served else None


def _write_config(directory: Path) -> Path:
    lines = ["[environments.contract]", 'provider = "local"', 'home = "home"', "control_port = 0"]
    for name in SERVICES:
        lines += [
            f"[environments.contract.services.{name}]",
            f'app = "{TEST_APP}"',
            "router_port = 0",
            "ready_timeout_s = 20",
        ]
    path = directory / "mangaassist.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def local_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSide]:
    directory = tmp_path_factory.mktemp("contract-local")
    config = _write_config(directory)
    settings = load_settings("contract", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=30)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    try:
        yield LocalSide(compute, RouterMetrics(compute), artifact)
    finally:
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"
        assert read_pid(settings.run_dir) is None


# -- aws on moto ---------------------------------------------------------------------------------


@dataclass
class FakeClock:
    """Time for the providers (deploy timeouts, CloudWatch periods) that tests move on."""

    now: float = field(default_factory=lambda: float(int(time.time()) - 7200))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeEcsAgent:
    """What ECS does with the tasks moto never runs (module docstring)."""

    ecs: Any
    elb: Any
    cluster: str
    clock: FakeClock
    _ips: Iterator[int] = field(default_factory=lambda: itertools.count(10))

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        arns = self.ecs.list_services(cluster=self.cluster, maxResults=100)["serviceArns"]
        for i in range(0, len(arns), 10):
            for svc in self.ecs.describe_services(cluster=self.cluster, services=arns[i : i + 10])[
                "services"
            ]:
                groups = [lb["targetGroupArn"] for lb in svc.get("loadBalancers", [])]
                if svc["status"] == "INACTIVE" or not groups:
                    continue
                targets = self.elb.describe_target_health(TargetGroupArn=groups[0])[
                    "TargetHealthDescriptions"
                ]
                if svc["desiredCount"] == 0 and targets:
                    self.elb.deregister_targets(
                        TargetGroupArn=groups[0], Targets=[t["Target"] for t in targets]
                    )
                elif len(targets) < svc["desiredCount"] and self._ready(svc["taskDefinition"]):
                    missing = svc["desiredCount"] - len(targets)
                    self.elb.register_targets(
                        TargetGroupArn=groups[0],
                        Targets=[{"Id": f"10.0.1.{next(self._ips)}", "Port": 8000} for _ in range(missing)],
                    )

    def _ready(self, task_definition: str) -> bool:
        found = self.ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
        env = {e["name"] for c in found["containerDefinitions"] for e in c.get("environment", [])}
        return "TESTAPP_NEVER_READY" not in env


@dataclass
class AwsNetwork:
    endpoint: str
    vpc_id: str
    subnets: list[str]
    security_group: str
    listener_arn: str
    cluster: str


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def aws_network(moto_endpoint: str) -> AwsNetwork:
    ec2, elb, ecs = (client(moto_endpoint, s) for s in ("ec2", "elbv2", "ecs"))
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"][
            "SubnetId"
        ]
        for i, z in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(GroupName="chatbot", Description="chatbot tasks", VpcId=vpc)["GroupId"]
    balancer = elb.create_load_balancer(Name="mangaassist", Subnets=subnets, SecurityGroups=[group])[
        "LoadBalancers"
    ][0]
    listener = elb.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}],
    )["Listeners"][0]["ListenerArn"]
    ecs.create_cluster(clusterName="mangaassist")
    return AwsNetwork(moto_endpoint, vpc, subnets, group, listener, "mangaassist")


@dataclass
class AwsSide:
    compute: EcsServiceCompute
    metrics: CloudWatchMetrics
    artifact: Artifact
    clock: FakeClock
    cloudwatch: Any
    name: str = "aws"

    def revision(self, name: str, **env: str) -> Revision:
        return Revision(name, self.artifact, TEST_APP, env)

    def traffic(self, service: str, revision: str, n: int, *, failed: int = 0, fallback: int = 0) -> None:
        dims = self.compute.alb_dimensions(service)[revision]
        alb = [{"Name": k, "Value": v} for k, v in dims.items()]
        at = datetime.fromtimestamp(self.clock.now, UTC)

        def datum(
            metric: str, value: float, dimensions: list[dict[str, str]], unit: str = "Count"
        ) -> dict[str, Any]:
            return {
                "MetricName": metric,
                "Dimensions": dimensions,
                "Timestamp": at,
                "Value": value,
                "Unit": unit,
            }

        self.cloudwatch.put_metric_data(
            Namespace="AWS/ApplicationELB",
            MetricData=[
                datum("RequestCount", n, alb),
                datum("HTTPCode_Target_2XX_Count", n - failed, alb),
                datum("HTTPCode_Target_5XX_Count", failed, alb),
                datum("TargetResponseTime", 0.05, alb, "Seconds"),
            ],
        )
        if fallback:
            own = [{"Name": "Service", "Value": service}, {"Name": "Revision", "Value": revision}]
            self.cloudwatch.put_metric_data(
                Namespace=self.metrics.namespace,
                MetricData=[
                    datum("RouterQualityFlags", fallback, [*own, {"Name": "Flag", "Value": "fallback"}])
                ],
            )

    def settle(self) -> None:
        self.clock.advance(SETTLE_S + PERIOD_S)

    def routed_to(self, service: str, headers: Mapping[str, str]) -> str | None:
        return alb_route(self.compute, service, headers)

    def reached_by(self, service: str, pin: Pin) -> str | None:
        """The ALB's rules for the pin's headers, when its URL is the ALB's (the service's)."""
        if pin.url != self.compute.url(service):
            return None
        return alb_route(self.compute, service, pin.headers)


def alb_route(
    compute: EcsServiceCompute, service: str, headers: Mapping[str, str], path: str = "/v1/chat"
) -> str | None:
    """The revision the ALB sends a request to, from the listener's rules as stored: the first rule
    (by priority) whose conditions all match; a weighted forward picks its heaviest target group."""
    elb = compute.elb
    rules = elb.describe_rules(ListenerArn=compute.listener_arn)["Rules"]
    sent = {k.lower(): v for k, v in headers.items()}

    def matches(condition: Mapping[str, Any]) -> bool:
        if condition["Field"] == "path-pattern":
            return any(_glob(p, path) for p in condition["PathPatternConfig"]["Values"])
        if condition["Field"] == "http-header":
            config = condition["HttpHeaderConfig"]
            return sent.get(config["HttpHeaderName"].lower()) in config["Values"]
        return False

    by_group = {
        lb["targetGroupArn"]: svc["serviceName"].rsplit("--", 1)[-1]
        for arns in [compute.ecs.list_services(cluster=compute.cluster)["serviceArns"]]
        for svc in (
            compute.ecs.describe_services(cluster=compute.cluster, services=arns)["services"] if arns else []
        )
        if svc["status"] != "INACTIVE" and svc["serviceName"].startswith(compute.family(service) + "--")
        for lb in svc.get("loadBalancers", [])
    }
    ordered = sorted(
        rules, key=lambda r: (r["IsDefault"], int(r["Priority"]) if str(r["Priority"]).isdigit() else 0)
    )
    for rule in ordered:
        if not rule["IsDefault"] and not all(matches(c) for c in rule["Conditions"]):
            continue
        action = rule["Actions"][0]
        if action["Type"] != "forward":
            return None
        groups = action.get("ForwardConfig", {}).get("TargetGroups") or [
            {"TargetGroupArn": action["TargetGroupArn"], "Weight": 1}
        ]
        heaviest = max(groups, key=lambda g: g.get("Weight", 1))
        if heaviest["TargetGroupArn"] in by_group:
            return str(by_group[heaviest["TargetGroupArn"]])
    return None


def _glob(pattern: str, path: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(path, pattern)


def make_aws_side(
    network: AwsNetwork, artifact: Artifact, dry: DryRun | None = None, **options: Any
) -> tuple[AwsSide, FakeEcsAgent]:
    """The aws side; ``dry``: its ECS and load-balancer clients behind that dry-run recorder."""
    ecs, elb, cw = (client(network.endpoint, s) for s in ("ecs", "elbv2", "cloudwatch"))
    clock = FakeClock()
    agent = FakeEcsAgent(ecs, elb, network.cluster, clock)
    compute = EcsServiceCompute(
        ecs if dry is None else dry.wrap(ecs),
        elb if dry is None else dry.wrap(elb),
        cluster=network.cluster,
        listener_arn=network.listener_arn,
        vpc_id=network.vpc_id,
        subnets=network.subnets,
        security_groups=[network.security_group],
        execution_role_arn=EXECUTION_ROLE,
        image=IMAGE,
        environment="contract",
        name_prefix=f"t{uuid4().hex[:6]}-",
        poll_s=1.0,
        sleep=agent.tick,
        clock=clock,
        **options,
    )
    metrics = CloudWatchMetrics(
        cw, sources_of(compute), settle_s=SETTLE_S, period_s=PERIOD_S, latency_percentiles=(), clock=clock
    )
    return AwsSide(compute, metrics, artifact, clock, cw), agent


@pytest.fixture(scope="session")
def contract_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return pack_source(ROOT / "src", tmp_path_factory.mktemp("contract-artifacts"))


@pytest.fixture
def aws_side(aws_network: AwsNetwork, contract_artifact: Artifact) -> AwsSide:
    return make_aws_side(aws_network, contract_artifact)[0]


# -- lambda on moto --------------------------------------------------------------------------------


LAMBDA_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mangaassist-chatbot-lambda:test"


def fake_lambda_probe(lam: Any) -> Any:
    """What the default probe (an invocation of the version) would find, without invoking through
    moto (it would run Docker): a version whose workload never gets ready fails it."""

    def probe(function_name: str, version: str) -> str | None:
        config = lam.get_function_configuration(FunctionName=function_name, Qualifier=version)
        env = (config.get("Environment") or {}).get("Variables") or {}
        reason = env.get("TESTAPP_NEVER_READY")
        return f"GET /readyz answered 503 ({reason})" if reason else None

    return probe


@dataclass
class LambdaSide:
    """``LambdaAliasCompute`` on moto's server: versions, a weighted alias, function URLs. Its metrics
    are not part of the contract here (nothing is invoked through moto)."""

    compute: LambdaAliasCompute
    artifact: Artifact
    name: str = "lambda"

    @property
    def metrics(self) -> Metrics:
        raise NotImplementedError("the lambda side runs the Compute contract only")

    def revision(self, name: str, **env: str) -> Revision:
        return Revision(name, self.artifact, TEST_APP, env)

    def traffic(self, service: str, revision: str, n: int, *, failed: int = 0, fallback: int = 0) -> None:
        raise NotImplementedError("the lambda side runs the Compute contract only")

    def settle(self) -> None:
        """Nothing is invoked: nothing to wait for."""

    def routed_to(self, service: str, headers: Mapping[str, str]) -> str | None:
        """What Lambda would run for a request: the pinned version (invoked by qualifier), else the
        alias's heaviest version, as stored on moto's server."""
        c = self.compute
        try:
            qualifier = c.qualifier(service, headers)
        except NotFoundError:
            return None
        by_version = {
            json.loads(v["Description"])["revision"]: v["Version"]
            for v in c.lam.list_versions_by_function(FunctionName=c.function_name(service))["Versions"]
            if v["Version"] != "$LATEST"
        }
        if qualifier == c.alias:
            alias = c.lam.get_alias(FunctionName=c.function_name(service), Name=c.alias)
            extra = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
            weights = {alias["FunctionVersion"]: 1.0 - sum(extra.values()), **extra}
            qualifier = max(weights, key=lambda v: weights[v])
        names = [rev for rev, version in by_version.items() if version == qualifier]
        return names[0] if names else None

    def reached_by(self, service: str, pin: Pin) -> str | None:
        """What Lambda would run for a request to ``pin.url`` (moto serves no function URL over
        HTTP): the alias whose function URL it is, that alias's heaviest version, its revision. The
        headers route nothing on Lambda."""
        c, name = self.compute, self.compute.function_name(service)
        for alias in c.lam.list_aliases(FunctionName=name)["Aliases"]:
            try:
                config = c.lam.get_function_url_config(FunctionName=name, Qualifier=alias["Name"])
            except c.lam.exceptions.ResourceNotFoundException:
                continue
            if config["FunctionUrl"] != pin.url:
                continue
            extra = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
            weights = {alias["FunctionVersion"]: 1.0 - sum(extra.values()), **extra}
            version = max(weights, key=lambda v: weights[v])
            for v in c.lam.list_versions_by_function(FunctionName=name)["Versions"]:
                if v["Version"] == version:
                    return str(json.loads(v["Description"])["revision"])
        return None


@pytest.fixture
def lambda_side(moto_endpoint: str, contract_artifact: Artifact) -> LambdaSide:
    lam, iam = client(moto_endpoint, "lambda"), client(moto_endpoint, "iam")
    prefix = f"t{uuid4().hex[:6]}-"
    role = iam.create_role(RoleName=f"{prefix}lambda", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    compute = LambdaAliasCompute(
        lam,
        role_arn=role,
        image=LAMBDA_IMAGE,
        environment="contract",
        name_prefix=prefix,
        probe=fake_lambda_probe(lam),
        poll_s=0.0,
        session=boto3.Session(**CREDENTIALS),  # what signs the pins (AWS_IAM function URLs)
    )
    return LambdaSide(compute, contract_artifact)


# -- Amazon Managed Prometheus's query API on a real Prometheus --------------------------------------


@dataclass
class AmpSide:
    """``AmpMetrics`` (SigV4 with moto's fake keys) pointed at a real Prometheus that scrapes a real
    control plane's routers every second, the same PromQL HTTP API AMP serves (Prometheus ignores
    the signature; tests/unit/platform/test_metrics_amp.py checks it). Compute and traffic: the
    local side's, on that control plane."""

    local: LocalSide
    metrics: AmpMetrics
    name: str = "amp"
    sent_to: set[str] = field(default_factory=set)

    @property
    def compute(self) -> Compute:
        return self.local.compute

    def revision(self, name: str, **env: str) -> Revision:
        return self.local.revision(name, **env)

    def traffic(self, service: str, revision: str, n: int, *, failed: int = 0, fallback: int = 0) -> None:
        self.local.traffic(service, revision, n, failed=failed, fallback=fallback)
        self.sent_to.add(service)

    def settle(self) -> None:
        """Until Prometheus has a scrape of the router taken after everything sent so far."""
        sent = time.time()
        deadline = time.monotonic() + 60
        for service in sorted(self.sent_to):
            while self.metrics.cursor(service) <= sent * 1_000_000:
                assert time.monotonic() < deadline, "no scrape of the router within 60 s"
                time.sleep(0.25)

    def routed_to(self, service: str, headers: Mapping[str, str]) -> str | None:
        return self.local.routed_to(service, headers)


@pytest.fixture(scope="session")
def amp_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmpSide]:
    directory = tmp_path_factory.mktemp("contract-amp")
    config = _write_config(directory)
    config.write_text(
        config.read_text()
        + "[environments.contract.monitoring]\nprometheus_port = 0\nalertmanager_port = 0\n"
        + "scrape_interval_s = 1\n"
    )
    settings = load_settings("contract", config)
    os.environ.setdefault("MANGAASSIST_ROOT", str(ROOT))
    start_control_plane(settings, config, wait_s=60)
    compute = LocalCompute(settings.run_dir)
    artifact = pack_source(ROOT / "src", settings.home / "artifacts")
    prometheus = LocalRuleHost(settings.home, settings.run_dir).url()
    assert prometheus, "the control plane started no Prometheus"
    session = boto3.Session(
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
    )
    metrics = AmpMetrics(prometheus, CREDENTIALS["region_name"], session=session)
    try:
        yield AmpSide(LocalSide(compute, RouterMetrics(compute), artifact), metrics)
    finally:
        metrics.close()
        compute.close()
        report = stop_control_plane(settings)
        assert report.left == [], f"processes left after stop: {report.left}"


def side_named(request: pytest.FixtureRequest, name: str) -> Side:
    """The side ``name`` (``local``, ``aws``, ``lambda``, ``amp``), from its fixture."""
    fixture = {"local": "local_plane", "aws": "aws_side", "lambda": "lambda_side", "amp": "amp_plane"}[name]
    side: Side = request.getfixturevalue(fixture)
    return side
