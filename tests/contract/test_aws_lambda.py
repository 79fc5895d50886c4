"""``LambdaAliasCompute`` beyond the ``Compute`` contract: the alias's two-version limit, retire never
deleting the alias's version, pins as each revision's own alias and function URL (and the alias
names they map to), health from the version's state, the dry run, and (botocore's ``Stubber``,
exact requests: nothing is invoked through moto, which would run Docker) the readiness probe and a
pinned invocation by version qualifier. moto's server and ``lambda_side``: conftest.py.
"""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import httpx
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.platform.aws.compute_ecs import NotSupportedError
from mangaassist.platform.aws.compute_lambda import (
    FunctionUrlAuth,
    LambdaAliasCompute,
    LambdaError,
    LambdaStateError,
    readiness_event,
    revision_alias,
)
from mangaassist.platform.aws.compute_routed import ServiceRoutedCompute
from mangaassist.platform.aws.dryrun import DryRun
from mangaassist.platform.compute import CUSTOMER_TOKEN_HEADER, PIN_HEADER, Pin, RevisionHealth
from tests.contract.conftest import LAMBDA_IMAGE, LambdaSide
from tests.moto_server import CREDENTIALS, client
from tests.sigv4_check import Signer, expected_signature, signature_of

pytestmark = pytest.mark.slow  # moto's server process


def _alias(side: LambdaSide, service: str) -> dict[str, Any]:
    c = side.compute
    alias = c.lam.get_alias(FunctionName=c.function_name(service), Name=c.alias)
    return {
        "main": alias["FunctionVersion"],
        "extra": alias.get("RoutingConfig", {}).get("AdditionalVersionWeights"),
    }


def _versions(side: LambdaSide, service: str) -> list[str]:
    c = side.compute
    found = c.lam.list_versions_by_function(FunctionName=c.function_name(service))["Versions"]
    return sorted(v["Version"] for v in found if v["Version"] != "$LATEST")


def test_an_alias_splits_over_two_versions_and_a_three_way_split_is_refused(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    for name in ("r1", "r2", "r3"):
        assert c.deploy("split", lambda_side.revision(name)).health is RevisionHealth.HEALTHY
    c.set_weights("split", {"r1": 80.0, "r2": 20.0})
    assert _alias(lambda_side, "split") == {"main": "1", "extra": {"2": 0.2}}
    with pytest.raises(
        NotSupportedError, match="main version plus ONE additional weighted version"
    ) as caught:
        c.set_weights("split", {"r1": 50.0, "r2": 30.0, "r3": 20.0})
    assert isinstance(caught.value, ConfigError) and "r1, r2, r3" in str(caught.value)
    assert _alias(lambda_side, "split") == {"main": "1", "extra": {"2": 0.2}}  # refused: unchanged
    # the main version stays main while it keeps weight; the one at 0 leaves the alias
    c.set_weights("split", {"r1": 10.0, "r3": 90.0})
    assert _alias(lambda_side, "split") == {"main": "1", "extra": {"3": 0.9}}
    c.set_weights("split", {"r3": 100.0})
    assert _alias(lambda_side, "split") == {"main": "3", "extra": {}}
    with pytest.raises(NotSupportedError, match="cannot mirror"):
        c.set_shadow("split", "r2", 0.1)
    assert c.status("split").shadow is None


def test_retire_deletes_the_version_and_never_the_one_the_alias_points_at(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.deploy("ret", lambda_side.revision("r1"))
    c.deploy("ret", lambda_side.revision("r2"))
    c.set_weights("ret", {"r1": 95.0, "r2": 5.0})
    with pytest.raises(LambdaStateError, match="r1 is the version alias live points at"):
        c.retire("ret", "r1")
    with pytest.raises(LambdaStateError, match="r2 still has weight 5%"):
        c.retire("ret", "r2")
    assert _versions(lambda_side, "ret") == ["1", "2"]
    c.set_weights("ret", {"r2": 100.0})
    with pytest.raises(LambdaStateError, match="r2 is the version alias live points at"):
        c.retire("ret", "r2")
    assert c.retire("ret", "r1").health is RevisionHealth.RETIRED
    assert _versions(lambda_side, "ret") == ["2"]
    with pytest.raises(NotFoundError):
        c.retire("ret", "r1")


def test_an_unready_version_keeps_its_reason_until_retired(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.deploy("unready", lambda_side.revision("r1"))
    bad = c.deploy("unready", lambda_side.revision("bad", TESTAPP_NEVER_READY="no model"))
    assert bad.health is RevisionHealth.UNHEALTHY and "no model" in (bad.reason or "")
    by_name = {r.name: r for r in c.status("unready").revisions}
    assert by_name["bad"].health is RevisionHealth.UNHEALTHY and "no model" in (by_name["bad"].reason or "")
    assert by_name["r1"].health is RevisionHealth.HEALTHY
    c.retire("unready", "bad")
    arn = c.lam.get_function(FunctionName=c.function_name("unready"))["Configuration"]["FunctionArn"]
    assert not any(k.startswith("mangaassist:unready:") for k in c.lam.list_tags(Resource=arn)["Tags"])


def test_a_deploy_without_an_image_is_refused_and_makes_nothing(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.image = None
    with pytest.raises(ConfigError, match=r"no container image .*LAMBDA_IMAGE"):
        c.deploy("noimage", lambda_side.revision("r1"))
    with pytest.raises(NotFoundError):
        c.status("noimage")
    assert (
        c.deploy("noimage", lambda_side.revision("r1", LAMBDA_IMAGE="repo/x:1")).health
        is RevisionHealth.HEALTHY
    )


def test_a_dry_run_records_the_changes_and_makes_none(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    recorder = DryRun(reads_made=True)
    real, c.lam, c.dry_run = c.lam, recorder.wrap(c.lam), True
    planned = c.deploy("dry", lambda_side.revision("r1"))
    assert planned.health is RevisionHealth.STARTING and planned.reason == "dry run"
    assert [call.operation for call in recorder.changes] == [
        "CreateFunction",
        "PublishVersion",
        "CreateAlias",
        "CreateFunctionUrlConfig",
        "CreateAlias",
        "CreateFunctionUrlConfig",
    ]
    assert [call.params.get("Name") or call.params.get("Qualifier") for call in recorder.changes[2:]] == [
        "live",
        "live",
        "rev-r1",
        "rev-r1",
    ]
    c.lam = real
    create = recorder.changes[0].params
    assert (
        create["PackageType"] == "Image"
        and create["Environment"]["Variables"]["MANGAASSIST_REVISION"] == "r1"
    )
    with pytest.raises(c.lam.exceptions.ResourceNotFoundException):  # nothing was made
        c.lam.get_function(FunctionName=c.function_name("dry"))


def _stubbed(
    payload: dict[str, Any], function_error: str | None = None
) -> tuple[LambdaAliasCompute, Stubber]:
    lam = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stub = Stubber(lam)
    raw = json.dumps(payload).encode()
    answer: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))}
    if function_error:
        answer["FunctionError"] = function_error
    stub.add_response(
        "invoke",
        answer,
        {
            "FunctionName": "prod-chatbot",
            "Qualifier": "7",
            "InvocationType": "RequestResponse",
            "Payload": json.dumps(readiness_event("/readyz")).encode(),
        },
    )
    return LambdaAliasCompute(lam, image="img", name_prefix="prod-"), stub


def test_the_default_probe_invokes_the_version_with_get_readyz() -> None:
    compute, stub = _stubbed({"statusCode": 200, "body": "ok"})
    with stub:
        assert compute.invoke_readiness("prod-chatbot", "7") is None
        stub.assert_no_pending_responses()
    compute, stub = _stubbed({"statusCode": 503, "body": "loading"})
    with stub:
        assert compute.invoke_readiness("prod-chatbot", "7") == "GET /readyz answered 503"
    compute, stub = _stubbed({"errorMessage": "boom"}, function_error="Unhandled")
    with stub:
        assert "Unhandled" in (compute.invoke_readiness("prod-chatbot", "7") or "")


def test_a_pinned_invocation_names_the_version_as_qualifier(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.deploy("pinned", lambda_side.revision("r1"))
    c.deploy("pinned", lambda_side.revision("r2"))
    assert c.qualifier("pinned", {}) == "live"
    assert c.qualifier("pinned", {PIN_HEADER: "r2"}) == "2"
    assert c.qualifier("pinned", {PIN_HEADER.lower(): "r1"}) == "1"
    with pytest.raises(NotFoundError):
        c.qualifier("pinned", {PIN_HEADER: "r9"})
    # the invocation itself, on a stubbed client (exact request): version 2, not the alias
    stubbed = boto3.client(
        "lambda", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    real = c.lam
    raw = b'{"statusCode": 200}'
    with Stubber(stubbed) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(raw), len(raw))},
            {
                "FunctionName": c.function_name("pinned"),
                "Qualifier": "2",
                "InvocationType": "RequestResponse",
                "Payload": b'{"rawPath": "/v1/chat"}',
            },
        )
        c.lam = _Split(real, stubbed)
        assert c.invoke("pinned", {"rawPath": "/v1/chat"}, {PIN_HEADER: "r2"}) == {"statusCode": 200}
        stub.assert_no_pending_responses()


class _Recording:
    """moto's client, remembering each call's operation and parameters in order."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, op: str) -> Any:
        method = getattr(self.client, op)
        if not callable(method) or op.startswith(("get_", "list_")):
            return method

        def call(**params: Any) -> Any:
            self.calls.append((op, params))
            return method(**params)

        return call


def test_each_revision_gets_an_alias_of_its_own_whose_function_url_is_its_pin(
    lambda_side: LambdaSide,
) -> None:
    """moto serves no function URL over HTTP (it runs no function), so the pin's URL is checked
    against the alias config it belongs to, not requested; moto's server keeps one URL per alias
    (``tests/moto_shims.py``), as AWS does."""
    c = lambda_side.compute
    lam, fn = c.lam, c.function_name("pinurl")
    c.deploy("pinurl", lambda_side.revision("r1"))
    c.deploy("pinurl", lambda_side.revision("r2"))
    assert _alias(lambda_side, "pinurl")["main"] == "1"  # r2 at 0%
    urls = {}
    for rev, version in (("r1", "1"), ("r2", "2")):
        alias = lam.get_alias(FunctionName=fn, Name=f"rev-{rev}")
        assert alias["FunctionVersion"] == version
        assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
        config = lam.get_function_url_config(FunctionName=fn, Qualifier=f"rev-{rev}")
        assert config["AuthType"] == "AWS_IAM" and config["FunctionArn"].endswith(f":rev-{rev}")
        assert c.pin("pinurl", rev) == Pin(config["FunctionUrl"], {PIN_HEADER: rev}, c.url_signer())
        urls[rev] = config["FunctionUrl"]
    assert len({urls["r1"], urls["r2"], c.url("pinurl")}) == 3  # neither pin is the weighted alias's URL
    assert lambda_side.reached_by("pinurl", c.pin("pinurl", "r2")) == "r2"
    routed = ServiceRoutedCompute({"pinurl": c})  # an environment with several kinds of compute
    assert routed.pin("pinurl", "r2") == c.pin("pinurl", "r2")
    with pytest.raises(NotFoundError, match="no service 'other'"):
        routed.pin("other", "r2")
    # a live name deployed again: its alias and URL already exist, nothing is made or changed
    spy = _Recording(lam)
    c.lam = spy
    assert c.deploy("pinurl", lambda_side.revision("r2")).health is RevisionHealth.HEALTHY
    assert spy.calls == []
    assert c.pin("pinurl", "r2").url == urls["r2"]
    names = sorted(a["Name"] for a in lam.list_aliases(FunctionName=fn)["Aliases"])
    assert names == ["live", "rev-r1", "rev-r2"]
    # retire: the URL config, then the alias, then the version (Lambda refuses to delete a version an
    # alias points at)
    c.set_weights("pinurl", {"r2": 100.0})
    spy.calls.clear()
    c.retire("pinurl", "r1")
    assert spy.calls == [
        ("delete_function_url_config", {"FunctionName": fn, "Qualifier": "rev-r1"}),
        ("delete_alias", {"FunctionName": fn, "Name": "rev-r1"}),
        ("delete_function", {"FunctionName": fn, "Qualifier": "1"}),
    ]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=fn, Name="rev-r1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=fn, Qualifier="rev-r1")
    assert lam.get_function_url_config(FunctionName=fn, Qualifier="rev-r2")["FunctionUrl"] == urls["r2"]
    assert lam.get_function_url_config(FunctionName=fn, Qualifier="live")["FunctionUrl"] == c.url("pinurl")
    with pytest.raises(NotFoundError, match=r"service pinurl has no revision 'r1'"):
        c.pin("pinurl", "r1")


def test_an_aws_iam_pin_signs_its_requests_and_a_none_pin_does_not(lambda_side: LambdaSide) -> None:
    """moto serves no function URL over HTTP, so the signed request is prepared, not sent: a valid
    SigV4 signature for ``lambda`` in the client's region with the session's credentials (the
    signature recomputed as AWS does), the customer's token moved to X-MangaAssist-Authorization.
    The same signer sent to a function URL stand-in in front of a real chatbot:
    tests/integration/test_customer_identity.py."""
    c = lambda_side.compute
    c.deploy("signed", lambda_side.revision("r1"))
    pin = c.pin("signed", "r1")
    assert isinstance(pin.auth, FunctionUrlAuth) and pin.auth is c.url_signer()  # one per provider
    assert (pin.auth.service, pin.auth.region) == ("lambda", CREDENTIALS["region_name"])
    request = httpx.Request(
        "POST",
        f"{pin.url.rstrip('/')}/v1/chat",
        json={"session_id": "s1", "message": "where is my order MA-100001?"},
        headers={**pin.headers, "Authorization": "Bearer a.b.c"},
    )
    pin.auth.sign(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers[CUSTOMER_TOKEN_HEADER.lower()] == "Bearer a.b.c"
    assert headers["x-mangaassist-revision"] == "r1" and "x-amz-date" in headers
    assert "x-amz-security-token" not in headers  # the session's credentials are static ones
    url = httpx.URL(pin.url)
    recorded = {
        "method": "POST",
        "path": request.url.raw_path.decode(),
        "headers": headers,
        "body": request.content,
    }
    signer = Signer("lambda", CREDENTIALS["region_name"], CREDENTIALS["aws_access_key_id"],
                    CREDENTIALS["aws_secret_access_key"], None)  # fmt: skip
    assert signature_of(recorded) == expected_signature(
        f"{url.scheme}://{url.netloc.decode()}", recorded, signer
    )
    # NONE: nothing to sign
    c.function_url_auth = "NONE"
    c.deploy("unsigned", lambda_side.revision("r1"))
    open_pin = c.pin("unsigned", "r1")
    assert (
        c.lam.get_function_url_config(FunctionName=c.function_name("unsigned"), Qualifier="rev-r1")[
            "AuthType"
        ]
        == "NONE"
    )
    assert open_pin.auth is None and open_pin.headers == {PIN_HEADER: "r1"}


def test_a_redeploy_makes_a_missing_pin_alias_and_url(lambda_side: LambdaSide) -> None:
    """A version whose alias is missing (a deploy that stopped half way, a version published before
    pins were aliases): ``pin`` says so, and deploying the same name again makes both."""
    c = lambda_side.compute
    lam, fn = c.lam, c.function_name("healpin")
    c.deploy("healpin", lambda_side.revision("r1"))
    lam.delete_function_url_config(FunctionName=fn, Qualifier="rev-r1")
    lam.delete_alias(FunctionName=fn, Name="rev-r1")
    with pytest.raises(
        NotFoundError, match=r"service healpin: revision r1's alias rev-r1 has no function URL"
    ):
        c.pin("healpin", "r1")
    assert c.deploy("healpin", lambda_side.revision("r1")).health is RevisionHealth.HEALTHY
    assert lam.get_alias(FunctionName=fn, Name="rev-r1")["FunctionVersion"] == "1"
    config = lam.get_function_url_config(FunctionName=fn, Qualifier="rev-r1")
    assert c.pin("healpin", "r1").url == config["FunctionUrl"]


def test_without_function_urls_a_pin_names_what_is_missing(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.function_url_auth = None
    c.deploy("nourl", lambda_side.revision("r1"))
    fn = c.function_name("nourl")
    assert c.lam.get_alias(FunctionName=fn, Name="rev-r1")["FunctionVersion"] == "1"  # the alias still
    with pytest.raises(c.lam.exceptions.ResourceNotFoundException):
        c.lam.get_function_url_config(FunctionName=fn, Qualifier="rev-r1")
    with pytest.raises(
        NotFoundError, match=r"revision r1's alias rev-r1 has no function URL .*function_url_auth"
    ):
        c.pin("nourl", "r1")


def test_a_revision_name_maps_to_a_valid_alias_name_or_is_refused() -> None:
    assert revision_alias("r1") == "rev-r1"
    assert revision_alias("2") == "rev-2"  # all digits would be a version number; the prefix avoids it
    assert revision_alias("canary-2026-12-07") == "rev-canary-2026-12-07"
    assert revision_alias("a_b") == "rev-a_b"
    assert revision_alias("x" * 124) == "rev-" + "x" * 124  # 128: Lambda's longest
    for bad in ("", "r.1", "r/1", "rév", "x" * 125):
        with pytest.raises(ConfigError, match=r"cannot name a Lambda alias") as caught:
            revision_alias(bad)
        assert repr(bad) in str(caught.value)


def test_the_services_alias_cannot_take_the_pins_prefix() -> None:
    with pytest.raises(ConfigError, match=r"alias 'rev-live' starts with 'rev-'"):
        LambdaAliasCompute(object(), alias="rev-live")
    with pytest.raises(ConfigError, match=r"starts with 'rev-'"):
        LambdaAliasCompute(object(), alias="REV-live")


def test_moto_still_ignores_a_function_url_qualifier() -> None:
    """moto 5.2.6 keeps one function URL per function whatever the ``Qualifier``; the tests' server
    (``tests/moto_shims.py``) gives it AWS's meaning, one per alias. This fails once moto does that
    itself: then the shim can go."""
    from moto import mock_aws

    with mock_aws():
        iam, lam = boto3.client("iam", **CREDENTIALS), boto3.client("lambda", **CREDENTIALS)
        role = iam.create_role(RoleName="canary", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam.create_function(FunctionName="f", Role=role, PackageType="Image", Code={"ImageUri": LAMBDA_IMAGE})
        version = lam.publish_version(FunctionName="f")["Version"]
        for name in ("a", "b"):
            lam.create_alias(FunctionName="f", Name=name, FunctionVersion=version)
        lam.create_function_url_config(FunctionName="f", Qualifier="a", AuthType="NONE")
        # on AWS alias b has no URL config (ResourceNotFoundException); moto answers a's
        assert lam.get_function_url_config(FunctionName="f", Qualifier="b")["AuthType"] == "NONE"


class _Split:
    """Reads from moto's server, invocations to the stubbed client."""

    def __init__(self, reads: Any, invokes: Any) -> None:
        self.reads, self.invokes = reads, invokes

    def __getattr__(self, op: str) -> Any:
        return getattr(self.invokes if op == "invoke" else self.reads, op)


def test_health_follows_the_versions_state_and_last_update_status() -> None:
    compute = LambdaAliasCompute(object(), image="img")
    from mangaassist.platform.aws.compute_lambda import _Version

    def health(**config: str) -> tuple[RevisionHealth, str | None]:
        version = _Version("r1", {"Version": "3", **config}, {"revision": "r1", "digest": "d"})
        status = compute._status_of(version, {"3": 100.0}, {})
        return status.health, status.reason

    assert health(State="Active", LastUpdateStatus="Successful") == (RevisionHealth.HEALTHY, None)
    assert health(State="Pending", LastUpdateStatus="InProgress")[0] is RevisionHealth.STARTING
    failed = health(State="Failed", StateReason="image not found", LastUpdateStatus="Successful")
    assert failed == (RevisionHealth.UNHEALTHY, "state Failed: image not found")
    update = health(State="Active", LastUpdateStatus="Failed", LastUpdateStatusReason="bad subnet")
    assert update == (RevisionHealth.UNHEALTHY, "last update Failed: bad subnet")
    assert health(State="Inactive", LastUpdateStatus="Successful")[0] is RevisionHealth.DEGRADED


# -- the API's permission on the service's alias (lambda_api_source_arn) ----------------------------

API_SOURCE_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/*/*/burst/*"


def _api_statements(side: LambdaSide, service: str) -> list[dict[str, Any]]:
    """The statements of the service alias's resource policy that let API Gateway invoke it."""
    c = side.compute
    try:
        policy = c.lam.get_policy(FunctionName=c.function_name(service), Qualifier=c.alias)["Policy"]
    except c.lam.exceptions.ResourceNotFoundException:
        return []
    statements = json.loads(policy).get("Statement") or []
    return [s for s in statements if "apigateway.amazonaws.com" in json.dumps(s.get("Principal"))]


def test_the_first_deploy_lets_the_api_invoke_the_alias_once(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.api_source_arn = API_SOURCE_ARN
    c.deploy("api", lambda_side.revision("r1"))
    (statement,) = _api_statements(lambda_side, "api")
    assert statement["Sid"] == c.api_statement_id() and statement["Sid"].startswith("mangaassist-api-")
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Condition"] == {"ArnLike": {"AWS:SourceArn": API_SOURCE_ARN}}
    assert statement["Resource"].endswith(f":function:{c.function_name('api')}:live")
    # later deploys (a new revision at 0%, the same name again) find it and add nothing
    c.deploy("api", lambda_side.revision("r2"))
    c.deploy("api", lambda_side.revision("r1"))
    assert len(_api_statements(lambda_side, "api")) == 1
    # the same alias and ARN give the same id in another run; another ARN another one
    assert c.api_statement_id() == LambdaAliasCompute(c.lam, api_source_arn=API_SOURCE_ARN).api_statement_id()
    other = LambdaAliasCompute(c.lam, api_source_arn=API_SOURCE_ARN.replace("abc123", "def456"))
    assert other.api_statement_id() != c.api_statement_id()


def test_without_an_api_source_arn_no_permission_is_added(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    assert c.api_source_arn is None
    c.deploy("noapi", lambda_side.revision("r1"))
    assert _api_statements(lambda_side, "noapi") == []


def test_a_dry_run_records_the_api_permission_and_makes_none(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.api_source_arn = API_SOURCE_ARN
    c.deploy("dryapi", lambda_side.revision("r1"))
    c.lam.remove_permission(
        FunctionName=c.function_name("dryapi"), StatementId=c.api_statement_id(), Qualifier=c.alias
    )
    assert _api_statements(lambda_side, "dryapi") == []
    recorder = DryRun(reads_made=True)
    real, c.lam, c.dry_run = c.lam, recorder.wrap(c.lam), True
    c.deploy("dryapi", lambda_side.revision("r2"))
    (add,) = [call for call in recorder.changes if call.operation == "AddPermission"]
    assert not add.made and add.params["SourceArn"] == API_SOURCE_ARN and add.params["Qualifier"] == "live"
    c.lam = real
    assert _api_statements(lambda_side, "dryapi") == []  # recorded, not made


def test_an_empty_account_s_dry_run_plans_the_permission_after_the_alias(lambda_side: LambdaSide) -> None:
    c = lambda_side.compute
    c.api_source_arn = API_SOURCE_ARN
    recorder = DryRun(reads_made=True)
    c.lam, c.dry_run = recorder.wrap(c.lam), True
    c.deploy("dryfirst", lambda_side.revision("r1"))
    operations = [call.operation for call in recorder.changes]
    assert operations[:4] == ["CreateFunction", "PublishVersion", "CreateAlias", "CreateFunctionUrlConfig"]
    assert operations[4] == "AddPermission" and recorder.changes[4].params["Principal"] == (
        "apigateway.amazonaws.com"
    )


def test_a_permission_another_deploy_added_meanwhile_is_not_an_error() -> None:
    lam = boto3.client("lambda", **CREDENTIALS)
    c = LambdaAliasCompute(lam, api_source_arn=API_SOURCE_ARN)
    with Stubber(lam) as stub:
        stub.add_client_error("get_policy", "ResourceNotFoundException", http_status_code=404)
        stub.add_client_error(
            "add_permission",
            "ResourceConflictException",
            http_status_code=409,
            expected_params={
                "FunctionName": "svc",
                "Qualifier": "live",
                "StatementId": c.api_statement_id(),
                "Action": "lambda:InvokeFunction",
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": API_SOURCE_ARN,
            },
        )
        c._allow_api("svc")
        stub.assert_no_pending_responses()
    with Stubber(lam) as stub:
        stub.add_client_error("get_policy", "ResourceNotFoundException", http_status_code=404)
        stub.add_client_error("add_permission", "AccessDeniedException", http_status_code=403)
        with pytest.raises(LambdaError, match="add_permission: AccessDeniedException"):
            c._allow_api("svc")


def test_the_function_runs_in_the_vpc_it_is_given_from_its_first_deploy_on(
    lambda_side: LambdaSide, moto_endpoint: str
) -> None:
    """With subnets and security groups (CD-02's private subnets and the burst path's group) the
    function is made in the VPC, and a later deploy moves it to the groups it is given then."""
    ec2 = client(moto_endpoint, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    groups = [
        ec2.create_security_group(VpcId=vpc, GroupName=f"burst-{i}", Description="burst")["GroupId"]
        for i in (1, 2)
    ]
    c = lambda_side.compute
    c.subnets, c.security_groups = subnets, groups[:1]
    c.deploy("invpc", lambda_side.revision("r1"))
    config = c.lam.get_function_configuration(FunctionName=c.function_name("invpc"))["VpcConfig"]
    assert sorted(config["SubnetIds"]) == sorted(subnets) and config["SecurityGroupIds"] == groups[:1]
    c.security_groups = groups[1:]
    c.deploy("invpc", lambda_side.revision("r2"))
    config = c.lam.get_function_configuration(FunctionName=c.function_name("invpc"))["VpcConfig"]
    assert config["SecurityGroupIds"] == groups[1:]
    # without them nothing is sent: a function outside the VPC has no VpcConfig
    c.subnets, c.security_groups = [], []
    c.deploy("outside", lambda_side.revision("r1"))
    outside = c.lam.get_function_configuration(FunctionName=c.function_name("outside"))
    assert not (outside.get("VpcConfig") or {}).get("SubnetIds")


def test_a_vpc_needs_both_subnets_and_security_groups() -> None:
    with pytest.raises(ConfigError, match="subnets without security_groups"):
        LambdaAliasCompute(object(), subnets=["subnet-1"])
    with pytest.raises(ConfigError, match="security_groups without subnets"):
        LambdaAliasCompute(object(), security_groups=["sg-1"])


def test_a_bad_name_prefix_or_api_source_arn_is_refused() -> None:
    with pytest.raises(ConfigError, match="name_prefix 'a b-'"):
        LambdaAliasCompute(object(), name_prefix="a b-")
    with pytest.raises(ConfigError, match="not an execute-api ARN"):
        LambdaAliasCompute(object(), api_source_arn="arn:aws:lambda:us-east-1:1:function:x")
    long = LambdaAliasCompute(object(), name_prefix="mangaassist-production-eu-west-")
    with pytest.raises(ConfigError, match="Lambda allows 64"):
        long.function_name("a-service-name-that-is-long-enough-to-overflow")
