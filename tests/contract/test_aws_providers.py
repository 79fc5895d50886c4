"""What the aws providers of the two contracts do beyond them: the ALB rules ``EcsServiceCompute``
writes (on moto's server), what it refuses, its dry run, and ``CloudWatchMetrics``' exact
``GetMetricData`` request and latency expansion (botocore's ``Stubber``: moto's server has no
percentile statistics)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from mangaassist.core.artifact import Artifact
from mangaassist.core.errors import ConfigError
from mangaassist.platform.aws.compute_ecs import (
    EcsServiceCompute,
    EcsStateError,
    NotSupportedError,
    alb_weights,
    target_group_name,
)
from mangaassist.platform.aws.dryrun import DryRun
from mangaassist.platform.aws.metrics_cloudwatch import CloudWatchMetrics, RevisionSource
from mangaassist.platform.compute import PIN_HEADER, Revision, RevisionHealth
from mangaassist.platform.metrics import OutcomeKind
from tests.contract.conftest import TEST_APP, AwsNetwork, make_aws_side
from tests.moto_server import CREDENTIALS, client


def _rules(side: Any, service: str) -> dict[str, dict[str, Any]]:
    compute = side.compute
    rules = compute.elb.describe_rules(ListenerArn=compute.listener_arn)["Rules"]
    tags = {
        d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]}
        for d in compute.elb.describe_tags(ResourceArns=[r["RuleArn"] for r in rules if not r["IsDefault"]])[
            "TagDescriptions"
        ]
    }
    return {
        tags[r["RuleArn"]]["mangaassist:rule"]: r
        for r in rules
        if not r["IsDefault"] and tags[r["RuleArn"]].get("mangaassist:service") == compute.family(service)
    }


def test_the_weighted_rule_is_sticky_and_pins_come_first(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    side, _ = make_aws_side(aws_network, contract_artifact, stickiness_s=1800)
    c = side.compute
    c.deploy("chat", side.revision("r1"), timeout_s=30)
    c.deploy("chat", side.revision("r2"), timeout_s=30)
    c.set_weights("chat", {"r1": 97.5, "r2": 2.5})
    rules = _rules(side, "chat")
    forward = rules["weights"]["Actions"][0]["ForwardConfig"]
    assert sorted(g["Weight"] for g in forward["TargetGroups"]) == [25, 975]  # 0.1% resolution
    assert forward["TargetGroupStickinessConfig"] == {"Enabled": True, "DurationSeconds": 1800}
    pin = rules["pin:r2"]
    assert {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": PIN_HEADER, "Values": ["r2"]}} in [
        {k: v for k, v in cond.items() if k in {"Field", "HttpHeaderConfig"}} for cond in pin["Conditions"]
    ]
    assert int(pin["Priority"]) < int(rules["weights"]["Priority"])
    dims = c.alb_dimensions("chat")
    assert dims["r1"]["LoadBalancer"].startswith("app/mangaassist/")
    assert dims["r1"]["TargetGroup"].startswith("targetgroup/")
    with pytest.raises(NotSupportedError, match="cannot mirror"):
        c.set_shadow("chat", "r2", 0.1)
    c.clear_shadow("chat")  # nothing to clear
    assert c.status("chat").shadow is None
    with pytest.raises(ConfigError, match="add up to 100"):
        c.set_weights("chat", {"r1": 50.0})
    with pytest.raises(ConfigError, match=r"finer than 0\.1%"):
        c.set_weights("chat", {"r1": 99.95, "r2": 0.05})
    c.set_weights("chat", {"r2": 100.0})
    assert c.retire("chat", "r1").health is RevisionHealth.RETIRED
    with pytest.raises(EcsStateError, match="move it to 0 first"):
        c.retire("chat", "r2")
    assert (
        "r1"
        not in _rules(side, "chat")["weights"]["Actions"][0]["ForwardConfig"]["TargetGroups"][0][
            "TargetGroupArn"
        ]
    )
    assert set(_rules(side, "chat")) == {"weights", "pin:r2"}


def test_a_retire_that_outlasts_its_drain_is_draining_and_finished_by_the_next(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    side, agent = make_aws_side(aws_network, contract_artifact)
    c = side.compute
    c.deploy("drain", side.revision("r1"), timeout_s=30)
    c.deploy("drain", side.revision("r2"), timeout_s=30)
    c.set_weights("drain", {"r2": 100.0})
    agent.tick = lambda s: side.clock.advance(s)  # type: ignore[method-assign,assignment]  # ECS stalls
    real = c.ecs.describe_services

    def still_running(**kw: Any) -> Any:
        found = real(**kw)
        for svc in found["services"]:
            svc["runningCount"] = 1
        return found

    c.ecs.describe_services = still_running
    drained = c.retire("drain", "r1", drain_timeout_s=3)
    assert drained.health is RevisionHealth.DRAINING and "retire again" in (drained.reason or "")
    assert {r.name: r.health for r in c.status("drain").revisions}["r1"] is RevisionHealth.DRAINING
    c.ecs.describe_services = real
    assert c.retire("drain", "r1").health is RevisionHealth.RETIRED
    assert [r.name for r in c.status("drain").revisions] == ["r2"]


def test_a_dry_run_records_the_changes_and_makes_none(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    recorder = DryRun(reads_made=True)
    side, _ = make_aws_side(aws_network, contract_artifact, dry=recorder, dry_run=True)
    status = side.compute.deploy("dry", side.revision("r1"))
    assert status.health is RevisionHealth.STARTING and status.reason == "dry run: nothing was changed"
    assert [c.operation for c in recorder.changes] == [
        "RegisterTaskDefinition",
        "CreateTargetGroup",
        "CreateRule",
        "CreateRule",
        "CreateService",
    ]
    assert all(c.made for c in recorder.calls if c.read) and not any(c.made for c in recorder.changes)
    assert side.compute.services() == [] or "dry" not in side.compute.services()
    assert _rules(side, "dry") == {}


def _scaling(side: Any, service: str, revision: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The revision's scalable targets and scaling policies, as Application Auto Scaling has them."""
    scaling, resource = side.compute.autoscaling, side.compute.scaling_resource_id(service, revision)
    targets = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])
    policies = scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource)
    return targets["ScalableTargets"], policies["ScalingPolicies"]


def test_a_revision_scales_between_its_replicas_and_max_tasks_until_it_is_retired(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    scaling = client(aws_network.endpoint, "application-autoscaling")
    side, _ = make_aws_side(aws_network, contract_artifact, autoscaling=scaling, max_replicas=6)
    c = side.compute
    two = Revision("r1", contract_artifact, TEST_APP, {}, replicas=2)
    assert c.deploy("scaled", two, timeout_s=30).health is RevisionHealth.HEALTHY
    resource = f"service/{aws_network.cluster}/{c.ecs_service_name('scaled', 'r1')}"
    ((target,), (policy,)) = _scaling(side, "scaled", "r1")
    assert target["ResourceId"] == resource == c.scaling_resource_id("scaled", "r1")
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 60.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
        "ScaleOutCooldown": 60,
        "ScaleInCooldown": 300,
    }
    # autoscaling raised the count: status still reports the replicas deployed (the next revision's)
    c.ecs.update_service(cluster=c.cluster, service=c.ecs_service_name("scaled", "r1"), desiredCount=5)
    assert [r.replicas for r in c.status("scaled").revisions] == [2]
    # deployed again (a resumed step), the same revision keeps its one target
    c.ecs.update_service(cluster=c.cluster, service=c.ecs_service_name("scaled", "r1"), desiredCount=2)
    assert c.deploy("scaled", two, timeout_s=30).name == "r1"
    assert len(_scaling(side, "scaled", "r1")[0]) == 1

    c.deploy("scaled", Revision("r2", contract_artifact, TEST_APP, {}, replicas=2), timeout_s=30)
    c.set_weights("scaled", {"r2": 100.0})
    order: list[str] = []
    deregister, update = c.autoscaling.deregister_scalable_target, c.ecs.update_service

    def deregistered(**kw: Any) -> Any:
        order.append(f"deregister {kw['ResourceId']}")
        return deregister(**kw)

    def updated(**kw: Any) -> Any:
        order.append(f"desired {kw['desiredCount']}")
        return update(**kw)

    c.autoscaling.deregister_scalable_target, c.ecs.update_service = deregistered, updated
    assert c.retire("scaled", "r1", drain_timeout_s=5).health is RevisionHealth.RETIRED
    assert order == [f"deregister {resource}", "desired 0"]  # scaling never fights the drain
    assert _scaling(side, "scaled", "r1")[0] == []
    assert len(_scaling(side, "scaled", "r2")[0]) == 1  # the other revision keeps its scaling


def test_max_tasks_equal_to_the_replicas_registers_no_scaling_and_below_them_is_refused(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    scaling = client(aws_network.endpoint, "application-autoscaling")
    side, _ = make_aws_side(aws_network, contract_artifact, autoscaling=scaling, max_replicas=2)
    c = side.compute
    c.deploy("fixed", Revision("r1", contract_artifact, TEST_APP, {}, replicas=2), timeout_s=30)
    assert _scaling(side, "fixed", "r1") == ([], [])
    with pytest.raises(ConfigError, match=r"max_replicas \(2, \[environments\.contract\.aws\] max_tasks\)"):
        c.deploy("fixed", Revision("r2", contract_artifact, TEST_APP, {}, replicas=3), timeout_s=30)
    assert [r.name for r in c.status("fixed").revisions] == ["r1"]  # refused before anything was made
    unscaled, _ = make_aws_side(aws_network, contract_artifact, autoscaling=scaling)  # max: the replicas
    unscaled.compute.deploy("plain", unscaled.revision("r1"), timeout_s=30)
    assert _scaling(unscaled, "plain", "r1") == ([], [])
    with pytest.raises(ConfigError, match="needs an application-autoscaling client"):
        make_aws_side(aws_network, contract_artifact, max_replicas=4)[0].compute.deploy(
            "noclient", Revision("r1", contract_artifact, TEST_APP, {}, replicas=2)
        )
    with pytest.raises(ConfigError, match="max_replicas 0 is below 1"):
        make_aws_side(aws_network, contract_artifact, max_replicas=0)


def test_a_dry_run_records_the_scaling_calls_and_makes_none(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    scaling = client(aws_network.endpoint, "application-autoscaling")
    recorder = DryRun(reads_made=True)
    side, _ = make_aws_side(
        aws_network, contract_artifact, dry=recorder, dry_run=True, autoscaling=recorder.wrap(scaling)
    )
    side.compute.max_replicas = 4
    side.compute.deploy("dryscale", Revision("r1", contract_artifact, TEST_APP, {}, replicas=2))
    changes = [(c.service, c.operation) for c in recorder.changes]
    assert changes[-2:] == [
        ("application-autoscaling", "RegisterScalableTarget"),
        ("application-autoscaling", "PutScalingPolicy"),
    ]
    assert not any(c.made for c in recorder.changes)
    resource = side.compute.scaling_resource_id("dryscale", "r1")
    assert (
        scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]
        == []
    )

    # a retire of a scaled revision, planned: the deregistration is recorded before the scale to 0
    real, _ = make_aws_side(aws_network, contract_artifact, autoscaling=scaling, max_replicas=4)
    real.compute.deploy(
        "dryretire", Revision("r1", contract_artifact, TEST_APP, {}, replicas=2), timeout_s=30
    )
    real.compute.deploy("dryretire", real.revision("r2"), timeout_s=30)
    real.compute.set_weights("dryretire", {"r2": 100.0})
    recorder = DryRun(reads_made=True)
    planned = EcsServiceCompute(
        recorder.wrap(real.compute.ecs),
        recorder.wrap(real.compute.elb),
        cluster=real.compute.cluster,
        listener_arn=real.compute.listener_arn,
        vpc_id=aws_network.vpc_id,
        subnets=aws_network.subnets,
        name_prefix=real.compute.prefix,
        autoscaling=recorder.wrap(scaling),
        dry_run=True,
    )
    planned.retire("dryretire", "r1")
    operations = [c.operation for c in recorder.changes]
    assert operations.index("DeregisterScalableTarget") < operations.index("UpdateService")
    assert not any(c.made for c in recorder.changes)
    resource = real.compute.scaling_resource_id("dryretire", "r1")
    assert (
        len(
            scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])[
                "ScalableTargets"
            ]
        )
        == 1
    )


def test_alb_weights_and_target_group_names() -> None:
    assert alb_weights({"a": 100.0, "b": 0.0}) == {"a": 100, "b": 0}
    assert alb_weights({"a": 99.5, "b": 0.5}) == {"a": 995, "b": 5}
    with pytest.raises(ConfigError):
        alb_weights({"a": 33.33, "b": 66.67})
    assert target_group_name("prod-chatbot-r1") == "prod-chatbot-r1"
    long = target_group_name("prod-chatbot-rel-0123456789abcdef")
    assert len(long) <= 32 and long != target_group_name("prod-chatbot-rel-0123456789abcdeg")


# -- CloudWatchMetrics with Stubber ------------------------------------------------------------------

T0 = 1_700_000_040  # a period start (multiple of 60)


def _metric_query(qid: str, namespace: str, metric: str, dims: dict[str, str], stat: str) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            },
            "Period": 60,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def test_percentiles_become_latencies_and_unanswered_requests_failures() -> None:
    cw = boto3.client("cloudwatch", **CREDENTIALS)  # type: ignore[call-overload]
    dims = {"LoadBalancer": "app/lb/1", "TargetGroup": "targetgroup/chat-r2/9"}
    metrics = CloudWatchMetrics(
        cw,
        lambda _s: {"r2": RevisionSource("alb", dims)},
        latency_percentiles=(50, 90),
        settle_s=120,
        clock=lambda: T0 + 60 + 120 + 5,  # the period [T0, T0 + 60) has settled
    )
    own = {"Service": "chatbot", "Revision": "r2"}
    counts = [
        ("RequestCount", 10),
        ("HTTPCode_Target_2XX_Count", 6),
        ("HTTPCode_Target_3XX_Count", 0),
        ("HTTPCode_Target_4XX_Count", 1),
        ("HTTPCode_Target_5XX_Count", 1),
        ("TargetConnectionErrorCount", 1),
    ]
    queries = [
        _metric_query(f"q{i}", "AWS/ApplicationELB", m, dims, "Sum") for i, (m, _) in enumerate(counts)
    ]
    latency = [("p50", 0.02), ("p90", 0.2), ("Maximum", 1.5)]
    queries += [
        _metric_query(f"q{6 + i}", "AWS/ApplicationELB", "TargetResponseTime", dims, s)
        for i, (s, _) in enumerate(latency)
    ]
    custom = [
        ("RouterQualityFlags", {"Flag": "fallback"}, 2),
        ("RouterQualityFlags", {"Flag": "guardrail"}, 1),
        ("RouterFeedback", {"Rating": "up"}, 0),
        ("RouterFeedback", {"Rating": "down"}, 1),
    ]
    queries += [
        _metric_query(f"q{9 + i}", "MangaAssist", m, {**own, **d}, "Sum")
        for i, (m, d, _) in enumerate(custom)
    ]
    values = [n for _, n in counts] + [v for _, v in latency] + [n for _, _, n in custom]
    at = datetime.fromtimestamp(T0, UTC)
    with Stubber(cw) as stub:
        stub.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": f"q{i}", "Timestamps": [at], "Values": [float(v)], "StatusCode": "Complete"}
                    for i, v in enumerate(values)
                ]
            },
            {
                "MetricDataQueries": queries,
                "StartTime": datetime.fromtimestamp(T0, UTC),
                "EndTime": datetime.fromtimestamp(T0 + 60, UTC),
                "ScanBy": "TimestampAscending",
            },
        )
        batch = metrics.outcomes("chatbot", T0 * 1_000_000)
        stub.assert_no_pending_responses()
    assert batch.cursor == (T0 + 60) * 1_000_000
    requests = [o for o in batch.outcomes if o.kind is OutcomeKind.REQUEST]
    assert Counter(o.status for o in requests) == {200: 6, 400: 1, 500: 1, 0: 2}
    assert Counter(o.error for o in requests if o.status == 0) == {"connect": 1, "unavailable": 1}
    answered = sorted(o.latency_ms for o in requests if o.status)
    # 8 answers: ranks 6.25%..93.75% -> p50 for the first four, p90 for the next three, Maximum above
    assert answered == pytest.approx([20.0] * 4 + [200.0] * 3 + [1500.0])
    assert sum(o.fallback for o in requests) == 2 and sum(o.guardrail for o in requests) == 1
    assert all(o.status == 200 for o in requests if o.fallback)
    assert [o.rating for o in batch.outcomes if o.kind is OutcomeKind.FEEDBACK] == ["down"]
    assert all(T0 <= o.time < T0 + 60 and o.revision == "r2" for o in batch.outcomes)
    # nothing settled since: an empty window, no call made (the Stubber has nothing queued)
    assert metrics.outcomes("chatbot", batch.cursor).outcomes == ()


def test_sagemaker_variants_have_no_2xx_metric_and_latency_in_microseconds() -> None:
    cw = boto3.client("cloudwatch", **CREDENTIALS)  # type: ignore[call-overload]
    source = RevisionSource("sagemaker", {"EndpointName": "prod-intent-model", "VariantName": "v2"})
    metrics = CloudWatchMetrics(
        cw, lambda _s: {"v2": source}, latency_percentiles=(), settle_s=0, clock=lambda: T0 + 60
    )
    values = {"q0": 5.0, "q1": 1.0, "q2": 1.0, "q3": 2500.0}  # Invocations, 4XX, 5XX, Average (us)
    at = datetime.fromtimestamp(T0, UTC)
    with Stubber(cw) as stub:
        stub.add_response(
            "get_metric_data",
            {"MetricDataResults": [{"Id": k, "Timestamps": [at], "Values": [v]} for k, v in values.items()]},
            {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY, "ScanBy": "TimestampAscending"},
        )
        batch = metrics.outcomes("intent-model", T0 * 1_000_000)
    assert Counter(o.status for o in batch.outcomes) == {200: 3, 400: 1, 500: 1}
    assert {o.latency_ms for o in batch.outcomes} == {2.5}
    assert metrics.shadow("intent-model", "v2").requests == 0 and metrics.alerts("intent-model") == []


def test_alerts_are_the_slo_alarms_of_the_service_in_alarm() -> None:
    """CD-08's alarms as CD-02's monitoring stack creates them (``alarms_document`` for prod): a
    severity composite in ALARM is an alert of the service its SLO guards; a condition's composite
    and another service's alarm are not; one a server returns in OK is not either. Stubber, since
    moto's server has no composite alarms (PutCompositeAlarm answers 500) and ignores StateValue
    next to AlarmNamePrefix."""
    from mangaassist.delivery.monitoring.build import resolve
    from mangaassist.delivery.monitoring.cloudwatch import alarms_document

    root = Path(__file__).parents[2]
    slos, ws, _ = resolve([root / "monitoring" / "slos"], "prod")
    composites = {c["AlarmName"]: c for c in alarms_document(slos, ws, "prod")["composite_alarms"]}
    page = "mangaassist-prod-slo-chatbot-chat-availability-page"
    condition = f"{page}-quick"
    ticket = "mangaassist-prod-slo-chatbot-chat-latency-ticket"
    other = "mangaassist-prod-slo-intent-model-intent-availability-page"
    assert {page, condition, ticket, other} <= set(composites), sorted(composites)
    since = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)

    def described(name: str, state: str = "ALARM") -> dict[str, Any]:
        c = composites[name]
        return {
            "AlarmName": name,
            "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}",
            "AlarmDescription": c["AlarmDescription"],
            "AlarmRule": c["AlarmRule"],
            "StateValue": state,
            "StateTransitionedTimestamp": since,
        }

    cw = boto3.client("cloudwatch", **CREDENTIALS)
    metrics = CloudWatchMetrics(cw, lambda service: {}, alarm_prefix="mangaassist-prod-slo-")
    request = {
        "AlarmNamePrefix": "mangaassist-prod-slo-",
        "AlarmTypes": ["CompositeAlarm"],
        "StateValue": "ALARM",
    }
    with Stubber(cw) as stub:
        firing = [described(page), described(condition), described(ticket), described(other)]
        stub.add_response("describe_alarms", {"CompositeAlarms": firing[:2], "NextToken": "t"}, request)
        stub.add_response(
            "describe_alarms",
            {"CompositeAlarms": [*firing[2:], described(page, "OK")]},
            request | {"NextToken": "t"},
        )
        alerts = metrics.alerts("chatbot")
        stub.add_response("describe_alarms", {"CompositeAlarms": firing}, request)
        intent = metrics.alerts("intent-model")
        stub.add_response("describe_alarms", {"CompositeAlarms": [described(page, "OK")]}, request)
        recovered = metrics.alerts("chatbot")
        stub.assert_no_pending_responses()
    assert [(a.name, a.service, a.severity) for a in alerts] == [
        (page, "chatbot", "page"),
        (ticket, "chatbot", "ticket"),
    ]
    assert "of service chatbot" in alerts[0].summary and alerts[0].since == since.isoformat()
    assert [a.name for a in intent] == [other] and recovered == []
    # without the environment's prefix there is nothing to ask
    with Stubber(cw) as stub:
        assert CloudWatchMetrics(cw, lambda service: {}).alerts("chatbot") == []
        stub.assert_no_pending_responses()


def test_tasks_get_the_workers_aws_settings_and_a_worker_opens_its_tables_with_them(
    aws_network: AwsNetwork, contract_artifact: Artifact, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What ``EcsServiceCompute`` puts in a task's environment is what ``workload_platform`` needs to
    reach the environment's stores: here its DynamoDB tables, on moto's server."""
    from mangaassist.core.errors import ConfigError as SettingsError
    from mangaassist.platform.factory import WORKLOAD_AWS_ENV, workload_aws_settings, workload_platform
    from tests.moto_server import client, create_table

    settings = {"region": "us-east-1", "endpoint_url": aws_network.endpoint, "cluster": "not-for-workers"}
    side, _ = make_aws_side(aws_network, contract_artifact, workload_env=workload_aws_settings(settings))
    side.compute.deploy("workers", side.revision("r1"))
    family = side.compute.family("workers")
    container = side.compute.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"][
        "containerDefinitions"
    ][0]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert json.loads(env[WORKLOAD_AWS_ENV]) == {"region": "us-east-1", "endpoint_url": aws_network.endpoint}
    assert env["MANGAASSIST_PROVIDER"] == "aws" and env["MANGAASSIST_EMF"] == "1"

    # the worker's side: the same variables, its tables on DynamoDB (moto)
    create_table(
        client(aws_network.endpoint, "dynamodb"),
        "mangaassist-contract-sessions",
        {"attributes": {"pk": "S", "sk": "S"}, "partition_key": "pk", "sort_key": "sk"},
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for key in ("MANGAASSIST_PROVIDER", "MANGAASSIST_ENV", WORKLOAD_AWS_ENV):
        monkeypatch.setenv(key, env[key])
    platform = workload_platform(tmp_path, tmp_path)
    tables = platform.tables()
    assert tables.physical("sessions") == "mangaassist-contract-sessions"
    tables.put("sessions", {"pk": "s1", "sk": "turn#1", "message": "hi"})
    assert (tables.get("sessions", "s1", "turn#1") or {}).get("message") == "hi"
    monkeypatch.setenv(WORKLOAD_AWS_ENV, '{"region": "us-east-1", "cluster": "x"}')
    with pytest.raises(SettingsError, match=r"MANGAASSIST_AWS_SETTINGS: .*unknown: \['cluster'\]"):
        workload_platform(tmp_path, tmp_path)
    monkeypatch.setenv(WORKLOAD_AWS_ENV, "{not json")
    with pytest.raises(SettingsError, match="MANGAASSIST_AWS_SETTINGS: not JSON"):
        workload_platform(tmp_path, tmp_path)


def test_a_missing_cluster_or_listener_names_the_setting_and_what_creates_it(
    aws_network: AwsNetwork,
) -> None:
    def compute(**where: str) -> EcsServiceCompute:
        settings = {"cluster": aws_network.cluster, "listener_arn": aws_network.listener_arn, **where}
        return EcsServiceCompute(
            client(aws_network.endpoint, "ecs"),
            client(aws_network.endpoint, "elbv2"),
            vpc_id=aws_network.vpc_id,
            subnets=aws_network.subnets,
            security_groups=[aws_network.security_group],
            execution_role_arn="arn:aws:iam::123456789012:role/exec",
            image="repo/app:1",
            environment="staging",
            **settings,
        )

    with pytest.raises(ConfigError) as cluster:
        compute(cluster="no-such-cluster").status("chatbot")
    text = str(cluster.value)
    assert "ECS cluster no-such-cluster ([environments.staging.aws] cluster) does not exist" in text
    assert "mangaassist deploy infra --env staging" in text
    gone = aws_network.listener_arn.rsplit("/", 1)[0] + "/0000000000000000"
    with pytest.raises(ConfigError, match=r"\[environments\.staging\.aws\] listener_arn\) does not exist"):
        compute(listener_arn=gone).status("chatbot")


AMP_WRITE = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1234abcd/api/v1/remote_write"


def _task_definition(side: Any, service: str) -> dict[str, Any]:
    family = side.compute.family(service)
    return dict(side.compute.ecs.describe_task_definition(taskDefinition=family)["taskDefinition"])


def test_with_amp_remote_write_url_every_task_gets_the_collector_and_the_app_its_series(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    import yaml

    from mangaassist.platform.aws.compute_ecs import COLLECTOR_CONFIG_ENV, DEFAULT_COLLECTOR_IMAGE

    side, _ = make_aws_side(
        aws_network, contract_artifact, amp_remote_write_url=AMP_WRITE, region="us-east-1", log_group="lg"
    )
    side.compute.deploy("amp", side.revision("r1"))
    app, collector = _task_definition(side, "amp")["containerDefinitions"]
    env = {e["name"]: e["value"] for e in app["environment"]}
    assert app["name"] == "app" and app["essential"] is True
    assert env["MANGAASSIST_REQUEST_SERIES"] == "1" and env["MANGAASSIST_REVISION"] == "r1"
    assert env["MANGAASSIST_SERVICE"] == "amp"
    assert collector["name"] == "collector" and collector["essential"] is False
    assert collector["image"] == DEFAULT_COLLECTOR_IMAGE
    assert collector["logConfiguration"]["options"]["awslogs-stream-prefix"].endswith("/r1/collector")
    (variable,) = collector["environment"]
    assert variable["name"] == COLLECTOR_CONFIG_ENV
    config = yaml.safe_load(variable["value"])
    assert config["exporters"]["prometheusremotewrite"]["endpoint"] == AMP_WRITE
    assert config["extensions"]["sigv4auth"] == {"region": "us-east-1", "service": "aps"}
    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["localhost:8000"]}] and job["scrape_interval"] == "15s"
    assert job["job_name"] == side.compute.family("amp")

    # without the setting: the one container, no series of its own (as before)
    plain, _ = make_aws_side(aws_network, contract_artifact, region="us-east-1", log_group="lg")
    plain.compute.deploy("plain", plain.revision("r1"))
    (only,) = _task_definition(plain, "plain")["containerDefinitions"]
    assert only["name"] == "app"
    assert "MANGAASSIST_REQUEST_SERIES" not in {e["name"] for e in only["environment"]}

    with pytest.raises(ConfigError, match="needs the region"):
        make_aws_side(aws_network, contract_artifact, amp_remote_write_url=AMP_WRITE)
    with pytest.raises(ConfigError, match="is not a remote-write URL"):
        make_aws_side(aws_network, contract_artifact, amp_remote_write_url="http://x", region="us-east-1")


def test_a_dry_run_records_the_task_definition_with_its_collector(
    aws_network: AwsNetwork, contract_artifact: Artifact
) -> None:
    recorder = DryRun(reads_made=True)
    side, _ = make_aws_side(
        aws_network,
        contract_artifact,
        dry=recorder,
        dry_run=True,
        amp_remote_write_url=AMP_WRITE,
        region="us-east-1",
        collector_image="public.ecr.aws/aws-observability/aws-otel-collector@sha256:" + "b" * 64,
    )
    side.compute.deploy("dryamp", side.revision("r1"))
    (registered,) = [c for c in recorder.changes if c.operation == "RegisterTaskDefinition"]
    assert not registered.made
    containers = registered.params["containerDefinitions"]
    assert [c["name"] for c in containers] == ["app", "collector"]
    assert containers[1]["image"].endswith("@sha256:" + "b" * 64)
    assert AMP_WRITE in containers[1]["environment"][0]["value"]
