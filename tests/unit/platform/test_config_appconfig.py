"""``AppConfigStore`` against botocore's ``Stubber`` on real boto3 clients (moto has no AppConfig
deployments): every AWS request is asserted parameter by parameter, responses are shaped as the
service model says (the Stubber validates them), time is fake."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from mangaassist.core.configspec import canonical, version_of
from mangaassist.core.errors import NotFoundError
from mangaassist.platform.aws.config_appconfig import (
    COUNT_METRICS,
    NAMESPACE,
    AppConfigCallError,
    AppConfigStore,
    VersionNotFound,
    describe_version,
    metric_data,
)
from mangaassist.platform.config_store import ConfigStore, ConfigStoreError, Observations, Rollout

APP = "app0001"
ENV = "env0001"
STRATEGY = "strat01"
CONTENT_PID = "prof001"
ROLLOUT_PID = "prof002"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
AT0 = "2025-01-02T03:04:05.000+00:00"

OLD = {"answer_template": "{answer}", "max_tokens": 300}
NEW = {"answer_template": "{answer}\nSources: {sources}", "max_tokens": 300}
V_OLD = version_of("runtime", OLD)
V_NEW = version_of("runtime", NEW)


class FakeTime:
    """Wall clock, monotonic clock and sleep that move together, only when slept on."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 0.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.wall

    def clock(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@dataclass
class Aws:
    store: AppConfigStore
    appconfig: Stubber
    data: Stubber
    cloudwatch: Stubber
    time: FakeTime

    def done(self) -> None:
        for stub in (self.appconfig, self.data, self.cloudwatch):
            stub.assert_no_pending_responses()


def _client(service: str) -> Any:
    factory: Any = boto3.client  # boto3-stubs has no overloads for these services here
    return factory(
        service, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def aws() -> Iterator[Aws]:
    clients = [_client(s) for s in ("appconfig", "appconfigdata", "cloudwatch")]
    stubs = [Stubber(c) for c in clients]
    fake = FakeTime()
    store = AppConfigStore(
        *clients, environment="prod", now=fake.now, clock=fake.clock, sleep=fake.sleep, since=T0
    )
    for stub in stubs:
        stub.activate()
    yield Aws(store, stubs[0], stubs[1], stubs[2], fake)
    for stub in stubs:
        stub.deactivate()


def body(data: Any) -> StreamingBody:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def expect_ids(aws: Aws, profiles: dict[str, str] | None = None) -> None:
    """The application and its configuration profiles, looked up once per store."""
    profiles = {"runtime": CONTENT_PID, "runtime.rollout": ROLLOUT_PID} if profiles is None else profiles
    aws.appconfig.add_response("list_applications", {"Items": [{"Id": APP, "Name": "mangaassist"}]}, {})
    aws.appconfig.add_response(
        "list_configuration_profiles",
        {"Items": [{"ApplicationId": APP, "Id": pid, "Name": name} for name, pid in profiles.items()]},
        {"ApplicationId": APP},
    )


def meta(author: str, message: str, at: str = AT0) -> str:
    return json.dumps({"author": author, "at": at, "message": message}, separators=(",", ":"))


def summary(pid: str, number: int, label: str, description: str) -> dict[str, Any]:
    return {
        "ApplicationId": APP,
        "ConfigurationProfileId": pid,
        "VersionNumber": number,
        "VersionLabel": label,
        "Description": description,
        "ContentType": "application/json",
    }


def expect_lookup(aws: Aws, pid: str, label: str, items: list[dict[str, Any]]) -> None:
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {"Items": items},
        {"ApplicationId": APP, "ConfigurationProfileId": pid, "VersionLabel": label},
    )


def expect_get(aws: Aws, pid: str, number: int, content: Any, label: str, description: str) -> None:
    aws.appconfig.add_response(
        "get_hosted_configuration_version",
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": pid,
            "VersionNumber": number,
            "VersionLabel": label,
            "Description": description,
            "ContentType": "application/json",
            "Content": body(content if isinstance(content, bytes) else canonical(content)),
        },
        {"ApplicationId": APP, "ConfigurationProfileId": pid, "VersionNumber": number},
    )


def rollout_doc(
    revision: int,
    stable: Any,
    candidate: Any,
    percentage: float,
    event: dict[str, Any],
) -> dict[str, Any]:
    return {
        "profile": "runtime",
        "revision": revision,
        "percentage": percentage,
        "stable": {"version": version_of("runtime", stable), "content": stable} if stable else None,
        "candidate": {"version": version_of("runtime", candidate), "content": candidate}
        if candidate
        else None,
        "event": event,
    }


def event(actor: str, action: str, version: str | None, pct: float | None, reason: str, at: str = AT0) -> Any:
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "version": version,
        "percentage": pct,
        "reason": reason,
    }


def encoded(doc: dict[str, Any]) -> bytes:
    """The bytes the store writes for a rollout document (sorted keys, UTF-8)."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()


# -- versions --------------------------------------------------------------------------------------


def test_create_version_new_creates_the_profile_and_a_hosted_version_labelled_by_digest(aws: Aws) -> None:
    expect_ids(aws, profiles={})
    aws.appconfig.add_response(
        "create_configuration_profile",
        {"ApplicationId": APP, "Id": CONTENT_PID, "Name": "runtime", "LocationUri": "hosted"},
        {"ApplicationId": APP, "Name": "runtime", "LocationUri": "hosted", "Type": "AWS.Freeform"},
    )
    expect_lookup(aws, CONTENT_PID, V_OLD, [])
    aws.appconfig.add_response(
        "create_hosted_configuration_version",
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": CONTENT_PID,
            "VersionNumber": 1,
            "Content": body(b""),
        },
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": CONTENT_PID,
            "Content": b'{"answer_template":"{answer}","max_tokens":300}',
            "ContentType": "application/json",
            # a header: ASCII only, so the JSON escapes the Japanese message
            "Description": '{"author":"alice","at":"2025-01-02T03:04:05.000+00:00",'
            '"message":"\\u521d\\u7248"}',
            "VersionLabel": V_OLD,
        },
    )
    made = aws.store.create_version("runtime", OLD, author="alice", message="初版")
    assert (made.version, made.content, made.author, made.message, made.created_at) == (
        V_OLD,
        OLD,
        "alice",
        "初版",
        AT0,
    )
    aws.done()


def test_create_version_same_content_is_the_existing_version_and_creates_nothing(aws: Aws) -> None:
    expect_ids(aws)
    earlier = "2024-12-31T23:00:00.000+00:00"
    expect_lookup(aws, CONTENT_PID, V_OLD, [summary(CONTENT_PID, 4, V_OLD, meta("alice", "first", earlier))])
    again = aws.store.create_version("runtime", OLD, author="bob", message="again")
    assert (again.version, again.author, again.message, again.created_at) == (
        V_OLD,
        "alice",
        "first",
        earlier,
    )
    aws.done()  # no CreateHostedConfigurationVersion was queued, and none was called


def test_versions_pages_through_the_listing_oldest_first_and_skips_foreign_labels(aws: Aws) -> None:
    expect_ids(aws)
    listing = {"ApplicationId": APP, "ConfigurationProfileId": CONTENT_PID}
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {
            "Items": [
                summary(CONTENT_PID, 3, "hand-edit-in-console", "oops"),
                summary(CONTENT_PID, 2, V_NEW, meta("bob", "citations")),
            ],
            "NextToken": "page2",
        },
        listing,
    )
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {"Items": [summary(CONTENT_PID, 1, V_OLD, meta("alice", "first"))]},
        {**listing, "NextToken": "page2"},
    )
    expect_get(aws, CONTENT_PID, 1, OLD, V_OLD, meta("alice", "first"))
    expect_get(aws, CONTENT_PID, 2, NEW, V_NEW, meta("bob", "citations"))
    got = aws.store.versions("runtime")
    assert [(v.version, v.content, v.author) for v in got] == [(V_OLD, OLD, "alice"), (V_NEW, NEW, "bob")]
    aws.done()


def test_unknown_version_is_not_found_and_a_config_store_error(aws: Aws) -> None:
    expect_ids(aws)
    expect_lookup(aws, CONTENT_PID, "runtime-000000000000", [])
    with pytest.raises(VersionNotFound, match="profile runtime has no version 'runtime-000000000000'") as err:
        aws.store.version("runtime", "runtime-000000000000")
    assert isinstance(err.value, NotFoundError) and isinstance(err.value, ConfigStoreError)
    aws.done()


def test_a_hosted_version_whose_content_does_not_match_its_label_is_refused(aws: Aws) -> None:
    expect_ids(aws)
    expect_lookup(aws, CONTENT_PID, V_OLD, [summary(CONTENT_PID, 1, V_OLD, meta("alice", "first"))])
    expect_get(aws, CONTENT_PID, 1, NEW, V_OLD, meta("alice", "first"))
    with pytest.raises(ConfigStoreError, match=f"labelled {V_OLD} but its content is {V_NEW}"):
        aws.store.version("runtime", V_OLD)
    aws.done()


# -- rollout writes --------------------------------------------------------------------------------


def expect_current(aws: Aws, number: int, doc: dict[str, Any]) -> None:
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {"Items": [summary(ROLLOUT_PID, n, f"r{n}", "") for n in range(number, 0, -1)]},
        {"ApplicationId": APP, "ConfigurationProfileId": ROLLOUT_PID},
    )
    expect_get(aws, ROLLOUT_PID, number, encoded(doc), f"r{doc['revision']}", "")


def expect_version(aws: Aws, number: int, content: Any, label: str) -> None:
    expect_lookup(aws, CONTENT_PID, label, [summary(CONTENT_PID, number, label, meta("alice", "x"))])
    expect_get(aws, CONTENT_PID, number, content, label, meta("alice", "x"))


def expect_environment(aws: Aws) -> None:
    aws.appconfig.add_response(
        "list_environments",
        {
            "Items": [
                {"ApplicationId": APP, "Id": "env-dev", "Name": "dev"},
                {"ApplicationId": APP, "Id": ENV, "Name": "prod"},
            ]
        },
        {"ApplicationId": APP},
    )


def deployment(number: int, version: int, state: str) -> dict[str, Any]:
    return {
        "ApplicationId": APP,
        "EnvironmentId": ENV,
        "DeploymentStrategyId": STRATEGY,
        "ConfigurationProfileId": ROLLOUT_PID,
        "DeploymentNumber": number,
        "ConfigurationVersion": str(version),
        "State": state,
    }


def test_set_rollout_writes_the_next_document_and_deploys_it_all_at_once(aws: Aws) -> None:
    expect_ids(aws)
    stable_doc = rollout_doc(1, OLD, None, 0.0, event("alice", "promote", V_OLD, 100.0, "first version"))
    expect_current(aws, 1, stable_doc)
    expect_version(aws, 2, NEW, V_NEW)
    expect_environment(aws)
    aws.appconfig.add_response(
        "list_deployment_strategies",
        {"Items": [{"Id": "AppConfig.AllAtOnce", "Name": "AppConfig.AllAtOnce"}]},
        {},
    )
    aws.appconfig.add_response(
        "create_deployment_strategy",
        {"Id": STRATEGY, "Name": "mangaassist-all-at-once"},
        {
            "Name": "mangaassist-all-at-once",
            "Description": "MangaAssist: the rollout pointer, everywhere at once, no bake",
            "DeploymentDurationInMinutes": 0,
            "FinalBakeTimeInMinutes": 0,
            "GrowthFactor": 100,
            "GrowthType": "LINEAR",
        },
    )
    expected = {
        "profile": "runtime",
        "revision": 2,
        "percentage": 20.0,
        "stable": {"version": V_OLD, "content": OLD},
        "candidate": {"version": V_NEW, "content": NEW},
        "event": {
            "at": AT0,
            "actor": "cd-06",
            "action": "rollout",
            "version": V_NEW,
            "percentage": 20.0,
            "reason": "step 20%",
        },
    }
    description = f"r2 rollout {V_NEW} 20% by cd-06: step 20%"
    aws.appconfig.add_response(
        "create_hosted_configuration_version",
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": ROLLOUT_PID,
            "VersionNumber": 2,
            "Content": body(b""),
        },
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": ROLLOUT_PID,
            "Content": json.dumps(expected, sort_keys=True).encode(),
            "ContentType": "application/json",
            "Description": description,
            "VersionLabel": "r2",
            "LatestVersionNumber": 1,
        },
    )
    aws.appconfig.add_response(
        "start_deployment",
        deployment(7, 2, "DEPLOYING"),
        {
            "ApplicationId": APP,
            "EnvironmentId": ENV,
            "DeploymentStrategyId": STRATEGY,
            "ConfigurationProfileId": ROLLOUT_PID,
            "ConfigurationVersion": "2",
            "Description": description,
        },
    )
    aws.appconfig.add_response(
        "get_deployment",
        deployment(7, 2, "COMPLETE"),
        {"ApplicationId": APP, "EnvironmentId": ENV, "DeploymentNumber": 7},
    )
    got = aws.store.set_rollout("runtime", candidate=V_NEW, percentage=20, actor="cd-06", reason="step 20%")
    assert got == Rollout("runtime", V_OLD, V_NEW, 20.0, 2)
    assert aws.time.slept == [1.0]  # one wait for the deployment to complete
    aws.done()


def test_set_rollout_checks_its_input_before_any_call(aws: Aws) -> None:
    with pytest.raises(ConfigStoreError, match=r"percentage 120 is outside 0\.\.100"):
        aws.store.set_rollout("runtime", candidate=V_NEW, percentage=120, actor="a")
    aws.done()


def test_a_candidate_without_a_stable_version_is_refused(aws: Aws) -> None:
    expect_ids(aws)
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {"Items": []},
        {"ApplicationId": APP, "ConfigurationProfileId": ROLLOUT_PID},
    )
    expect_version(aws, 1, NEW, V_NEW)
    with pytest.raises(ConfigStoreError, match="profile runtime has no stable version yet: promote one"):
        aws.store.set_rollout("runtime", candidate=V_NEW, percentage=10, actor="a")
    aws.done()


def test_promote_makes_the_candidate_stable_and_the_write_is_read_back_at_once(aws: Aws) -> None:
    expect_ids(aws)
    expect_version(aws, 2, NEW, V_NEW)
    at_100 = rollout_doc(5, OLD, NEW, 100.0, event("cd-06", "rollout", V_NEW, 100.0, "step 100%"))
    expect_current(aws, 5, at_100)
    expect_environment(aws)
    aws.appconfig.add_response(
        "list_deployment_strategies", {"Items": [{"Id": STRATEGY, "Name": "mangaassist-all-at-once"}]}, {}
    )
    expected = rollout_doc(6, NEW, None, 0.0, event("cd-06", "promote", V_NEW, 100.0, "passed — 良好"))
    description = f"r6 promote {V_NEW} 0% by cd-06: passed \\u2014 \\u826f\\u597d"  # ASCII header
    aws.appconfig.add_response(
        "create_hosted_configuration_version",
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": ROLLOUT_PID,
            "VersionNumber": 6,
            "Content": body(b""),
        },
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": ROLLOUT_PID,
            "Content": encoded(expected),
            "ContentType": "application/json",
            "Description": description,
            "VersionLabel": "r6",
            "LatestVersionNumber": 5,
        },
    )
    aws.appconfig.add_response(
        "start_deployment",
        deployment(9, 6, "COMPLETE"),
        {
            "ApplicationId": APP,
            "EnvironmentId": ENV,
            "DeploymentStrategyId": STRATEGY,
            "ConfigurationProfileId": ROLLOUT_PID,
            "ConfigurationVersion": "6",
            "Description": description,
        },
    )
    assert aws.store.promote("runtime", V_NEW, actor="cd-06", reason="passed — 良好") == Rollout(
        "runtime", V_NEW, None, 0.0, 6
    )
    # The data API still serves revision 5 (the first poll after a deployment may lag): our own write wins.
    aws.data.add_response(
        "start_configuration_session",
        {"InitialConfigurationToken": "tok0"},
        {
            "ApplicationIdentifier": "mangaassist",
            "EnvironmentIdentifier": "prod",
            "ConfigurationProfileIdentifier": "runtime.rollout",
            "RequiredMinimumPollIntervalInSeconds": 15,
        },
    )
    aws.data.add_response(
        "get_latest_configuration",
        {
            "NextPollConfigurationToken": "tok1",
            "NextPollIntervalInSeconds": 15,
            "Configuration": body(encoded(at_100)),
        },
        {"ConfigurationToken": "tok0"},
    )
    assert aws.store.rollout("runtime") == Rollout("runtime", V_NEW, None, 0.0, 6)
    assert aws.time.slept == []
    aws.done()


def test_a_rolled_back_deployment_fails_and_its_hosted_version_is_deleted(aws: Aws) -> None:
    expect_ids(aws)
    stable_doc = rollout_doc(1, OLD, None, 0.0, event("alice", "promote", V_OLD, 100.0, ""))
    expect_current(aws, 1, stable_doc)
    expect_environment(aws)
    aws.appconfig.add_response(
        "list_deployment_strategies", {"Items": [{"Id": STRATEGY, "Name": "mangaassist-all-at-once"}]}, {}
    )
    aws.appconfig.add_response(
        "create_hosted_configuration_version",
        {
            "ApplicationId": APP,
            "ConfigurationProfileId": ROLLOUT_PID,
            "VersionNumber": 2,
            "Content": body(b""),
        },
    )
    aws.appconfig.add_client_error(
        "start_deployment", "ConflictException", "Deployment in progress", http_status_code=409
    )
    aws.appconfig.add_response("start_deployment", deployment(3, 2, "ROLLED_BACK"))
    aws.appconfig.add_response(
        "delete_hosted_configuration_version",
        {},
        {"ApplicationId": APP, "ConfigurationProfileId": ROLLOUT_PID, "VersionNumber": 2},
    )
    with pytest.raises(ConfigStoreError, match=r"deployment 3 of runtime\.rollout ended ROLLED_BACK"):
        aws.store.set_rollout("runtime", candidate=None, percentage=0, actor="rollback")
    assert aws.time.slept == [1.0]  # the conflicting deployment was waited out once
    assert aws.store._written == {}  # nothing is taken as written
    aws.done()


# -- rollout reads (data API) ----------------------------------------------------------------------


def test_rollout_reads_the_data_api_keeps_the_token_and_an_empty_body_means_unchanged(aws: Aws) -> None:
    session = {
        "ApplicationIdentifier": "mangaassist",
        "EnvironmentIdentifier": "prod",
        "ConfigurationProfileIdentifier": "runtime.rollout",
        "RequiredMinimumPollIntervalInSeconds": 15,
    }
    at_20 = rollout_doc(2, OLD, NEW, 20.0, event("cd-06", "rollout", V_NEW, 20.0, "step 20%"))
    at_40 = rollout_doc(3, OLD, NEW, 40.0, event("cd-06", "rollout", V_NEW, 40.0, "step 40%"))
    aws.data.add_response("start_configuration_session", {"InitialConfigurationToken": "tok0"}, session)
    aws.data.add_response(
        "get_latest_configuration",
        {
            "NextPollConfigurationToken": "tok1",
            "NextPollIntervalInSeconds": 15,
            "ContentType": "application/json",
            "VersionLabel": "r2",
            "Configuration": body(encoded(at_20)),
        },
        {"ConfigurationToken": "tok0"},
    )
    first = Rollout("runtime", V_OLD, V_NEW, 20.0, 2)
    assert aws.store.rollout("runtime") == first
    aws.time.advance(5)
    assert aws.store.rollout("runtime") == first  # inside the poll interval: no call ("Request too early")
    aws.time.advance(10)
    aws.data.add_response(
        "get_latest_configuration",
        {"NextPollConfigurationToken": "tok2", "NextPollIntervalInSeconds": 15, "Configuration": body(b"")},
        {"ConfigurationToken": "tok1"},
    )
    assert aws.store.rollout("runtime") == first  # empty body: unchanged
    aws.time.advance(15)
    aws.data.add_response(
        "get_latest_configuration",
        {
            "NextPollConfigurationToken": "tok3",
            "NextPollIntervalInSeconds": 15,
            "Configuration": body(encoded(at_40)),
        },
        {"ConfigurationToken": "tok2"},
    )
    assert aws.store.rollout("runtime") == Rollout("runtime", V_OLD, V_NEW, 40.0, 3)
    aws.done()


def test_rollout_of_a_profile_never_deployed_has_no_stable_version(aws: Aws) -> None:
    aws.data.add_client_error(
        "start_configuration_session", "ResourceNotFoundException", "not found", http_status_code=404
    )
    assert aws.store.rollout("flags") == Rollout("flags", None, None, 0.0, 0)
    aws.done()


# -- history ---------------------------------------------------------------------------------------


def test_history_merges_version_creations_and_rollout_documents_by_time(aws: Aws) -> None:
    expect_ids(aws)
    at = ["2025-01-01T10:00:00.000+00:00", "2025-01-01T10:00:01.000+00:00", "2025-01-02T09:00:00.000+00:00"]
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {
            "Items": [
                summary(CONTENT_PID, 3, "hand-edit-in-console", "oops"),
                summary(CONTENT_PID, 2, V_NEW, meta("bob", "citations", at[2])),
                summary(CONTENT_PID, 1, V_OLD, meta("alice", "first", at[0])),
            ]
        },
        {"ApplicationId": APP, "ConfigurationProfileId": CONTENT_PID},
    )
    promoted = event("alice", "promote", V_OLD, 100.0, "first version", at[1])
    rolled = event("cd-06", "rollout", V_NEW, 20.0, "step 20%", "2025-01-02T09:00:05.000+00:00")
    aws.appconfig.add_response(
        "list_hosted_configuration_versions",
        {"Items": [summary(ROLLOUT_PID, 1, "r1", ""), summary(ROLLOUT_PID, 2, "r2", "")]},
        {"ApplicationId": APP, "ConfigurationProfileId": ROLLOUT_PID},
    )
    expect_get(aws, ROLLOUT_PID, 1, encoded(rollout_doc(1, OLD, None, 0.0, promoted)), "r1", "")
    expect_get(aws, ROLLOUT_PID, 2, encoded(rollout_doc(2, OLD, NEW, 20.0, rolled)), "r2", "")
    assert aws.store.history("runtime") == [
        event("alice", "create", V_OLD, None, "first", at[0]),
        promoted,
        event("bob", "create", V_NEW, None, "citations", at[2]),
        rolled,
    ]
    aws.done()


# -- observations (CloudWatch) ---------------------------------------------------------------------


def _dims(version: str) -> list[dict[str, str]]:
    return [{"Name": "Profile", "Value": "runtime"}, {"Name": "Version", "Value": version}]


def test_observations_sum_the_count_metrics_per_version_from_get_metric_data(aws: Aws) -> None:
    aws.time.advance(150)  # 03:06:35, so the window is 03:04 .. 03:07
    listing = {
        "Namespace": NAMESPACE,
        "MetricName": "requests",
        "Dimensions": [{"Name": "Profile", "Value": "runtime"}],
    }
    aws.cloudwatch.add_response(
        "list_metrics",
        {
            "Metrics": [{"Namespace": NAMESPACE, "MetricName": "requests", "Dimensions": _dims(V_OLD)}],
            "NextToken": "m2",
        },
        listing,
    )
    aws.cloudwatch.add_response(
        "list_metrics",
        {"Metrics": [{"Namespace": NAMESPACE, "MetricName": "requests", "Dimensions": _dims(V_NEW)}]},
        {**listing, "NextToken": "m2"},
    )
    # Sorted by name: the new version's digest sorts first or second; the ids follow that order.
    versions = sorted([V_OLD, V_NEW])
    queries = [
        {
            "Id": f"c{i}_{j}",
            "MetricStat": {
                "Metric": {"Namespace": "MangaAssist/Config", "MetricName": metric, "Dimensions": _dims(v)},
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for i, v in enumerate(versions)
        for j, metric in enumerate(COUNT_METRICS)
    ]
    window = {
        "MetricDataQueries": queries,
        "StartTime": datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        "EndTime": datetime(2025, 1, 2, 3, 7, tzinfo=UTC),
        "ScanBy": "TimestampAscending",
    }
    new = versions.index(V_NEW)
    aws.cloudwatch.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": f"c{new}_0", "Values": [30.0, 12.0], "StatusCode": "Complete"},
                {"Id": f"c{new}_1", "Values": [1.0], "StatusCode": "Complete"},
                {"Id": f"c{1 - new}_0", "Values": [], "StatusCode": "Complete"},
            ],
            "NextToken": "d2",
        },
        window,
    )
    aws.cloudwatch.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": f"c{new}_0", "Values": [8.0], "StatusCode": "Complete"},
                {"Id": f"c{new}_5", "Values": [2.0], "StatusCode": "Complete"},
            ]
        },
        {**window, "NextToken": "d2"},
    )
    seen = aws.store.observations("runtime")
    # The old version reported nothing in the window; the new one's counts add up over pages.
    assert seen == {V_NEW: Observations(requests=50, errors=1, thumbs_down=2)}
    assert seen[V_NEW].latencies_ms == []  # CloudWatch keeps no raw samples
    aws.done()


def test_latency_percentiles_ask_one_period_covering_the_window(aws: Aws) -> None:
    aws.time.advance(600)
    aws.cloudwatch.add_response(
        "list_metrics",
        {"Metrics": [{"Namespace": NAMESPACE, "MetricName": "requests", "Dimensions": _dims(V_NEW)}]},
    )
    queries = [
        {
            "Id": f"l0_{stat}",
            "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": "latency_ms", "Dimensions": _dims(V_NEW)},
                "Period": 660,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for stat in ("p50", "p90", "p99")
    ]
    aws.cloudwatch.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": "l0_p50", "Values": [41.0]},
                {"Id": "l0_p90", "Values": [77.5]},
                {"Id": "l0_p99", "Values": [120.0]},
            ]
        },
        {
            "MetricDataQueries": queries,
            "StartTime": datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
            "EndTime": datetime(2025, 1, 2, 3, 15, tzinfo=UTC),
            "ScanBy": "TimestampAscending",
        },
    )
    assert aws.store.latency_percentiles("runtime") == {V_NEW: {"p50": 41.0, "p90": 77.5, "p99": 120.0}}
    aws.done()


def test_metric_data_is_the_put_metric_data_payload_the_reader_expects() -> None:
    data = metric_data("runtime", V_NEW, Observations(requests=3, errors=1, latencies_ms=[40.04, 40.0, 90.0]))
    by_name = {d["MetricName"]: d for d in data}
    assert set(by_name) == {*COUNT_METRICS, "latency_ms"}
    assert by_name["requests"] == {
        "MetricName": "requests",
        "Dimensions": _dims(V_NEW),
        "Value": 3.0,
        "Unit": "Count",
    }
    assert by_name["latency_ms"]["Values"] == [40.0, 90.0]
    assert by_name["latency_ms"]["Counts"] == [2.0, 1.0]
    cloudwatch = _client("cloudwatch")  # the payload passes botocore's own parameter validation
    with Stubber(cloudwatch) as stub:
        stub.add_response("put_metric_data", {}, {"Namespace": NAMESPACE, "MetricData": data})
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data)
        stub.assert_no_pending_responses()


# -- errors and set-up -----------------------------------------------------------------------------


def test_a_client_error_names_the_service_operation_and_aws_code(aws: Aws) -> None:
    expect_ids(aws)
    stable_doc = rollout_doc(1, OLD, None, 0.0, event("alice", "promote", V_OLD, 100.0, ""))
    expect_current(aws, 1, stable_doc)
    expect_environment(aws)
    aws.appconfig.add_response(
        "list_deployment_strategies", {"Items": [{"Id": STRATEGY, "Name": "mangaassist-all-at-once"}]}, {}
    )
    aws.appconfig.add_client_error(
        "create_hosted_configuration_version",
        "ConflictException",
        "LatestVersionNumber 1 is not the latest version",
        http_status_code=409,
    )
    with pytest.raises(AppConfigCallError) as err:
        aws.store.set_rollout("runtime", candidate=None, percentage=0, actor="rollback")
    assert str(err.value) == (
        "appconfig CreateHostedConfigurationVersion failed: ConflictException: "
        "LatestVersionNumber 1 is not the latest version"
    )
    assert (err.value.operation, err.value.code) == ("CreateHostedConfigurationVersion", "ConflictException")
    assert isinstance(err.value, ConfigStoreError)
    aws.done()


def test_without_create_missing_a_missing_application_is_named(aws: Aws) -> None:
    aws.store.create_missing = False
    aws.appconfig.add_response("list_applications", {"Items": [{"Id": "other", "Name": "other-app"}]}, {})
    with pytest.raises(ConfigStoreError, match="AppConfig application 'mangaassist' does not exist"):
        aws.store.create_version("runtime", OLD, author="alice")
    aws.done()


def test_create_missing_makes_the_application(aws: Aws) -> None:
    aws.appconfig.add_response("list_applications", {"Items": []}, {})
    aws.appconfig.add_response(
        "create_application",
        {"Id": APP, "Name": "mangaassist"},
        {"Name": "mangaassist", "Description": "MangaAssist config profiles (CD-06)"},
    )
    aws.appconfig.add_response("list_configuration_profiles", {"Items": []}, {"ApplicationId": APP})
    assert aws.store.versions("runtime") == []  # a read never creates a profile
    aws.done()


@pytest.mark.parametrize("message", ["m" * 5000, "漫画" * 1000, "😀" * 300])
def test_description_is_ascii_and_cut_to_appconfig_limit(message: str) -> None:
    text = describe_version("アリス", AT0, message)
    assert len(text) <= 1024 and text.isascii()
    kept = json.loads(text)
    assert kept["author"] == "アリス"
    assert kept["message"].endswith("...") and message.startswith(kept["message"][:-3])
    assert len(text) > 1024 - 12 * 2  # cut no more than needed


def test_from_env_builds_real_clients_for_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MANGAASSIST_ENV", "staging")
    store: ConfigStore = AppConfigStore.from_env("eu-west-1", application="manga-test")  # mypy: the protocol
    assert isinstance(store, AppConfigStore)
    assert (store.application, store.environment) == ("manga-test", "staging")
    assert store._ac.meta.region_name == "eu-west-1"
    assert store._data.meta.service_model.service_name == "appconfigdata"
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(Exception, match="no AWS region"):
        AppConfigStore.from_env()
