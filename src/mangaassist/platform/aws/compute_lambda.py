"""``Compute`` for the chatbot's burst path on AWS Lambda, split by alias routing weights (issue 18).

Mapping (each line is one Lambda concept):

* a *service* is one Lambda function ``{name_prefix}{service}`` (a container image; tag
  ``mangaassist:service``) and its alias ``alias`` (default ``live``), which is what users reach:
  the alias's function URL (``function_url_auth``, made with the alias on the first deploy) or
  ``base_url`` (CloudFront, API Gateway) when given;
* a *revision* is one **published version** of the function. Its code is the container image
  ``revision.env["LAMBDA_IMAGE"]`` or the constructor's ``image`` (**the image holds the code**,
  as on ECS; it runs the ASGI app behind the AWS Lambda Web Adapter, which ``AWS_LWA_PORT`` and
  ``AWS_LWA_READINESS_CHECK_PATH`` configure). The version's environment is the revision's ``env``
  (less ``LAMBDA_IMAGE``) plus ``MANGAASSIST_REVISION``, ``MANGAASSIST_SERVICE``,
  ``MANGAASSIST_APP``, ``MANGAASSIST_PROVIDER``, ``MANGAASSIST_ENV``, ``workload_env`` (the
  workload's aws settings) and ``MANGAASSIST_ARTIFACT_DIGEST``. The version's description is JSON
  naming the revision, its digest, the digest of its env and its ``replicas``: that is how a version
  is found again by revision name. Lambda scales per request, so ``replicas`` is recorded and read
  back, not applied (no provisioned concurrency is managed here: see cold starts below).
* *weights* are the alias's ``FunctionVersion`` (the main version) and
  ``RoutingConfig.AdditionalVersionWeights``. **Lambda routes an alias to its main version plus at
  most ONE additional weighted version**: a split over two revisions is the most it can do, and
  ``set_weights`` with three or more non-zero weights raises ``NotSupportedError`` naming that limit
  (moto accepts more; AWS does not). The additional version's weight is its share (0..1); the main
  version gets the rest. A revision at 0% is not in the alias at all. ``set_weights`` is one
  ``UpdateAlias`` call, which Lambda applies at once.
* a *pin* is a **place**, not a header: every revision has an alias of its own,
  ``revision_alias(NAME)`` = ``rev-NAME``, pointing at its version (no routing config), and, when
  ``function_url_auth`` is set, a function URL on that alias. ``pin(service, revision)`` returns
  that URL, so a smoke test, a pinned gate or a readiness check over HTTP runs the revision's
  version whatever the weights (the weighted alias's URL cannot be pinned: Lambda draws a version
  per invocation and reads no header). The pin still carries ``X-MangaAssist-Revision: NAME``,
  which routes nothing here: the workload reads it, as on every provider, to tell a gate's request
  from a user's (``chatbot.faults``' ``scope=users``). The alias name is Lambda's pattern
  ``(?!^[0-9]+$)([a-zA-Z0-9-_]+)``, at most 128 characters: the prefix keeps it from being all
  digits and from the service's alias, which may not start with ``rev-``; a name that cannot map is
  a ``ConfigError``. Without ``function_url_auth`` there is no URL to pin to: ``pin`` raises
  ``NotFoundError`` saying so. With ``base_url`` (CloudFront, API Gateway in front of the service's
  alias), users go through the front and **pins go straight to the revision's function URL**,
  bypassing it (its auth, WAF and headers are not what smoke tests exercise there); a team that
  wants pinned requests through the front must route them to the alias ``rev-NAME`` itself (its
  function URL as an origin, or an integration with that qualifier). With ``AWS_IAM`` a request to
  the pin's URL must be signed (SigV4, service ``lambda``), as one to the service's URL must: the
  pin's ``auth`` is then ``FunctionUrlAuth`` (``url_signer()``: one per provider, in ``region``,
  with ``session``'s credentials, checked when the pin is made), which every pipeline HTTP check
  sends its pinned requests through. SigV4 takes ``Authorization``, which carries the customer's
  token: the signer moves a ``Bearer`` token to ``X-MangaAssist-Authorization``
  (``platform.compute.CUSTOMER_TOKEN_HEADER``, which the chatbot reads) before it signs, so the
  signature covers the headers and body as sent. With ``NONE`` the pin has no ``auth``.
  For direct invocation, ``qualifier(service, headers)`` maps ``X-MangaAssist-Revision: NAME`` to
  the version (the alias otherwise) and ``invoke`` runs it.
* *stickiness*: none. Lambda's weighted alias draws a version per invocation; a conversation is
  not kept on the revision it started on (the chatbot keeps its state in ``Tables``, so any version
  can continue it; judges count per request).
* ``deploy``: the function is created on the first deploy (``role_arn``, ``memory_mb``,
  ``timeout_s``, and with ``subnets`` and ``security_groups``, which come together, its
  ``VpcConfig``: CD-02's private subnets and the burst path's security group, so the function
  reaches what the tasks reach inside the VPC, the search domain above all; later deploys update
  its code and configuration, the VPC included, waiting until ``LastUpdateStatus`` is
  ``Successful`` after each; without them no ``VpcConfig`` is sent and the function's stays as it
  is), then ``PublishVersion`` (with the code's
  ``CodeSha256``, so a concurrent change is refused rather than published), then it waits until the
  version's ``State`` is ``Active`` or ``timeout_s`` passes, then asks the ``probe`` whether the
  workload is ready (default: one invocation of the version with a function-URL event
  ``GET /readyz``, which also warms one execution environment). Between publishing and probing, the
  revision's own alias (and its function URL) is made: see pins. A version that is not ready is
  ``UNHEALTHY`` with the probe's reason, recorded on the function as the tag
  ``mangaassist:unready:REVISION`` so ``status`` says so too. The service's first revision gets
  the alias at 100% (and the function URL); later ones get weight 0. A live name deployed again
  returns its status when digest, app and env are the same, else ``LambdaStateError`` naming what
  differs; the revision's alias and URL are made then if they are missing (a deploy that stopped
  half way, a version from before pins were aliases). Deploys of one service must not run
  concurrently (they share the function's
  ``$LATEST``; the ``CodeSha256`` guard refuses the loser's publish).
* **the function's name and its API**: ``name_prefix`` (the factory's ``lambda_name_prefix``,
  default ``ENV-``) makes the function's name; CD-02 makes what the function needs before it exists
  (its execution role, log group, the image repository's policy for Lambda) and points the edge
  stack's API route and the monitoring stack's alarm at ``mangaassist-ENV-chatbot-burst``'s alias
  ``live`` by name, so an environment whose burst service is ``chatbot-burst`` sets
  ``lambda_name_prefix = "mangaassist-ENV-"`` (docs/aws.md). CloudFormation cannot grant an API
  the right to invoke a function that does not exist yet, so the provider does: with
  ``api_source_arn`` (``lambda_api_source_arn``, the edge stack's output: the API's execute-api
  ARN pattern) every deploy makes sure the service's alias has a resource-policy statement allowing
  ``apigateway.amazonaws.com`` ``lambda:InvokeFunction`` from that ARN (``AddPermission`` with
  ``Qualifier`` the alias; ``api_statement_id()``, derived from the alias and the ARN, so a deploy
  that finds it, by ``GetPolicy`` or Lambda's ``ResourceConflictException``, adds nothing). A new
  ARN adds a statement; the old one stays until removed by hand. Without it nothing is added.
* ``retire``: the version must not be in the alias (neither its main version nor the weighted
  one: ``LambdaStateError``), then the revision's function URL config and alias are deleted (Lambda
  refuses to delete a version an alias points at), then ``DeleteFunction`` with its version as
  ``Qualifier``; the
  version the alias points at is never deleted. Lambda has no drain: invocations already running
  finish, and the alias sent nothing new to it once its weight was 0. ``RETIRED`` at once.
* health (``status``): from the version's ``State`` and ``LastUpdateStatus``: ``Active`` and
  ``Successful``: ``HEALTHY`` (unless the probe's tag says ``UNHEALTHY``); ``Pending`` or
  ``InProgress``: ``STARTING``; ``Failed`` (either): ``UNHEALTHY`` with Lambda's
  ``StateReason``/``LastUpdateStatusReason``; ``Inactive`` (idle for weeks): ``DEGRADED``, the
  next invocation re-activates it and fails until it is ``Active``. A version has no workers here.
* **cold starts**: a version that has not served for a while (or a burst beyond its warm
  environments) starts a new execution environment: image pull, Python import and the chatbot's
  model load, seconds, on the request that caused it. The readiness probe warms one environment,
  a canary at a few percent warms few; judges see cold starts as latency of the new revision.

**Not supported** (``NotSupportedError``, a ``ConfigError``, raised rather than pretended): a split
over three or more revisions (above); shadows (a Lambda alias cannot mirror invocations, so
``set_shadow`` refuses, ``clear_shadow`` has nothing to clear, ``status`` reports no shadow).

**Dry run**: with ``dry_run=True`` (the factory sets it while a dry run is on; the client is then
behind ``platform.aws.dryrun``'s recorder, which records every call that may change something
instead of making it) the provider neither waits for updates nor probes: ``deploy`` returns
``STARTING`` with the reason "dry run". ``AddPermission`` is a change: recorded, never made.

Errors: an unknown service, revision or AWS resource is ``NotFoundError``; bad input (names,
weights, a missing image) ``ConfigError``; an operation that does not fit the state (retiring a
version the alias routes to, redeploying a name with other contents) ``LambdaStateError``; any other
``ClientError`` ``LambdaError`` naming the operation and AWS's code and message.

Status: tested against moto's server (functions from container images, ``PublishVersion``,
aliases with ``RoutingConfig``, version deletion, tags, function URLs) in
``tests/contract/test_compute_contract.py`` and ``tests/contract/test_aws_lambda.py``. moto 5.2.6
ignores a function URL config's ``Qualifier`` (one URL per function); the tests' server
(``tests/moto_server.py``) adds it with AWS's meaning, one URL per alias, and moto does not serve
function URLs over HTTP, so a pin's URL is checked against the alias it belongs to, not requested;
the signer is checked by ``tests/unit/platform/test_function_url_auth.py`` against a loopback server
that recomputes each signature as AWS does, and in ``tests/integration/test_customer_identity.py``
through a function URL stand-in to a real chatbot, which answers as the customer it moved.
Nothing is invoked through moto (it would run Docker): those tests give a probe that reads the
version's environment, as ``FakeEcsAgent`` does for ECS; the default probe and ``invoke`` are tested
with botocore's ``Stubber`` (exact requests). It has not run against a real AWS account yet.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from botocore.exceptions import ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError, NotFoundError
from mangaassist.platform.aws.compute_ecs import NotSupportedError
from mangaassist.platform.aws.compute_ecs import check_name as ecs_check_name
from mangaassist.platform.aws.sigv4 import Credentials, SigV4HttpxAuth
from mangaassist.platform.compute import (
    CUSTOMER_TOKEN_HEADER,
    PIN_HEADER,
    Pin,
    Revision,
    RevisionHealth,
    RevisionStatus,
    ServiceStatus,
    Shadow,
    check_weights,
    parse_bearer,
)

IMAGE_ENV = "LAMBDA_IMAGE"
DIGEST_ENV = "MANGAASSIST_ARTIFACT_DIGEST"
TAG_SERVICE = "mangaassist:service"
TAG_UNREADY = "mangaassist:unready:"
API_PRINCIPAL = "apigateway.amazonaws.com"
"""Who ``api_source_arn``'s statement lets invoke the service's alias (API Gateway)."""
API_STATEMENT_PREFIX = "mangaassist-api-"
_PREFIX = re.compile(r"^[a-zA-Z0-9_-]*$")
"""A function-name prefix: what Lambda's function names allow (letters, digits, '-', '_')."""
MAX_FUNCTION_NAME = 64
MAX_ROUTED_VERSIONS = 2
"""A Lambda alias routes to its main version plus at most one additional weighted version."""
_NAME = re.compile(r"^[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*$")
REVISION_ALIAS_PREFIX = "rev-"
"""Each revision's own alias is ``rev-NAME``; the service's alias may not start with it."""
MAX_ALIAS_NAME = 128
_ALIAS_NAME = re.compile(r"(?!^[0-9]+$)([a-zA-Z0-9_-]+)")
"""Lambda's pattern for alias names (``CreateAlias``'s ``Name``), at most 128 characters."""

Probe = Callable[[str, str], "str | None"]
"""``probe(function_name, version)``: None when the version's workload is ready, else why not."""


SIGNING_SERVICE = "lambda"
"""The SigV4 service name of Lambda function URLs."""
SIGV4_SCHEME = "AWS4-HMAC-SHA256"


class FunctionUrlAuth(SigV4HttpxAuth):
    """Signs requests to a function URL whose ``AuthType`` is ``AWS_IAM`` (SigV4, service
    ``lambda``, the function's region), what ``pin`` gives with such a URL.

    SigV4 takes ``Authorization``, which callers use for the customer's token: before signing, an
    ``Authorization: Bearer <token>`` moves to ``X-MangaAssist-Authorization`` (the chatbot reads it
    there; ``chatbot.identity``), so the signature covers the request as it is sent. A request that
    carries the same token in both keeps one; different tokens, more than one ``Authorization``, or
    another scheme than Bearer (which the signature would silently replace) are a ``ConfigError``
    naming the request, and nothing is sent. A signature of its own (a redirected request) is
    replaced. Tokens are never quoted."""

    def __init__(self, credentials: Callable[[], Credentials | None], region: str) -> None:
        super().__init__(credentials, region, SIGNING_SERVICE, what="Lambda")

    def prepare(self, request: httpx.Request) -> None:
        where = f"{request.method} {request.url.copy_with(query=None)}"
        sent = request.headers.get_list("authorization")
        if len(sent) > 1:
            raise ConfigError(
                f"{where}: {len(sent)} Authorization headers; a signed pin takes at most one, the "
                "customer's 'Bearer <token>'"
            )
        if not sent:
            return
        scheme = sent[0].strip().partition(" ")[0]
        del request.headers["authorization"]
        if scheme.upper() == SIGV4_SCHEME:
            return  # a signature of ours (a redirect): signed again
        token = parse_bearer(sent[0])
        if token is None:
            raise ConfigError(
                f"{where}: Authorization is not 'Bearer <token>' (scheme {scheme[:20]!r}); the pin's "
                f"SigV4 signature replaces Authorization, so only a customer's Bearer token can be "
                f"sent, moved to {CUSTOMER_TOKEN_HEADER}"
            )
        theirs = request.headers.get_list(CUSTOMER_TOKEN_HEADER)
        if theirs and [parse_bearer(v) for v in theirs] != [token]:
            raise ConfigError(
                f"{where}: Authorization and {CUSTOMER_TOKEN_HEADER} carry different customer tokens; "
                "send the customer's token in one of them"
            )
        request.headers[CUSTOMER_TOKEN_HEADER] = f"Bearer {token}"


class LambdaError(MangaAssistError):
    """Lambda refused a call; the message names the operation and AWS's code."""


class LambdaStateError(MangaAssistError):
    """The operation does not fit the service as it is (retiring a version the alias routes to...)."""


def check_name(kind: str, name: str) -> str:
    """Service and revision names: as on ECS, at most 48 characters (function names allow 64)."""
    return ecs_check_name(kind, name, on="Lambda", longest=48)


def revision_alias(revision: str) -> str:
    """The name of ``revision``'s own alias: ``rev-NAME``.

    Lambda's alias names match ``(?!^[0-9]+$)([a-zA-Z0-9-_]+)`` and have at most 128 characters; the
    prefix keeps the name from being all digits (a version number), from every other revision's (the
    mapping is one to one) and from the service's alias (which may not start with it).
    ``ConfigError`` naming the revision when its name cannot be one (the provider's revision names,
    ``check_name``, always can)."""
    alias = REVISION_ALIAS_PREFIX + revision
    if not revision or not _ALIAS_NAME.fullmatch(alias) or len(alias) > MAX_ALIAS_NAME:
        raise ConfigError(
            f"revision name {revision!r} cannot name a Lambda alias ({alias!r}): an alias name is "
            f"letters, digits, '-' and '_', at most {MAX_ALIAS_NAME} characters with the prefix "
            f"{REVISION_ALIAS_PREFIX!r}"
        )
    return alias


def _env_digest(env: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(env.items()))).encode()).hexdigest()[:16]


@dataclass
class _Version:
    """One published version as Lambda knows it, with what its description records."""

    revision: str
    config: dict[str, Any]
    meta: dict[str, Any]

    @property
    def number(self) -> str:
        return str(self.config["Version"])

    @property
    def env(self) -> dict[str, str]:
        return dict((self.config.get("Environment") or {}).get("Variables") or {})


def _statement_ids(policy: Any) -> set[str]:
    """The ``Sid`` of each statement of a resource policy as ``GetPolicy`` returns it (JSON text);
    none when it is missing or not a policy (a dry run's placeholder)."""
    try:
        document = json.loads(policy) if isinstance(policy, str) else None
    except ValueError:
        return set()
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    return {str(s["Sid"]) for s in statements or [] if isinstance(s, dict) and "Sid" in s}


def _meta(description: str | None) -> dict[str, Any] | None:
    try:
        meta = json.loads(description or "")
    except ValueError:
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("revision"), str) else None


class LambdaAliasCompute:
    """``Compute`` on published Lambda versions behind a weighted alias; client injected (boto3
    ``lambda``, moto or stubbed in tests). See the module docstring for the mapping."""

    def __init__(
        self,
        lambda_client: Any,
        *,
        role_arn: str | None = None,
        image: str | None = None,
        alias: str = "live",
        environment: str = "",
        name_prefix: str = "",
        memory_mb: int = 2048,
        timeout_s: int = 30,
        container_port: int = 8000,
        readiness_path: str = "/readyz",
        function_url_auth: str | None = "AWS_IAM",
        base_url: str | Mapping[str, str] | None = None,
        probe: Probe | None = None,
        poll_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        dry_run: bool = False,
        workload_env: Mapping[str, str] | None = None,
        region: str | None = None,
        session: Any = None,
        api_source_arn: str | None = None,
        subnets: Sequence[str] = (),
        security_groups: Sequence[str] = (),
    ) -> None:
        if not _NAME.match(alias) or alias.isdigit():
            raise ConfigError(f"alias {alias!r} is not a valid Lambda alias name (letters, digits, hyphens)")
        if alias.lower().startswith(REVISION_ALIAS_PREFIX):
            raise ConfigError(
                f"alias {alias!r} starts with {REVISION_ALIAS_PREFIX!r}, which names each revision's "
                "own alias (the pins); choose another name for the service's alias "
                "([environments.NAME.aws] lambda_alias)"
            )
        if function_url_auth not in (None, "AWS_IAM", "NONE"):
            raise ConfigError(f"function_url_auth {function_url_auth!r}: expected AWS_IAM, NONE or None")
        if not 128 <= memory_mb <= 10240:
            raise ConfigError(f"memory_mb {memory_mb} is not between 128 and 10240 (Lambda's limits)")
        if not 1 <= timeout_s <= 900:
            raise ConfigError(f"timeout_s {timeout_s} is not between 1 and 900 (Lambda's limits)")
        if not _PREFIX.match(name_prefix) or len(name_prefix) > MAX_FUNCTION_NAME - 1:
            raise ConfigError(
                f"name_prefix {name_prefix!r} cannot start a Lambda function name (letters, digits, "
                f"'-' and '_', at most {MAX_FUNCTION_NAME} characters in all; "
                "[environments.NAME.aws] lambda_name_prefix)"
            )
        if api_source_arn is not None and not re.match(r"^arn:[a-z-]+:execute-api:", api_source_arn):
            raise ConfigError(
                f"api_source_arn {api_source_arn!r} is not an execute-api ARN "
                "(arn:PARTITION:execute-api:REGION:ACCOUNT:API_ID/STAGE/METHOD/PATH; "
                "[environments.NAME.aws] lambda_api_source_arn)"
            )
        if bool(subnets) != bool(security_groups):
            given, missing = ("subnets", "security_groups") if subnets else ("security_groups", "subnets")
            raise ConfigError(
                f"{given} without {missing}: a function in a VPC needs both (Lambda's VpcConfig; "
                "[environments.NAME.aws] lambda_subnets and lambda_security_groups, CD-02's compute "
                "stack outputs LambdaSubnetIds and LambdaSecurityGroupId)"
            )
        self.lam = lambda_client
        self.role_arn = role_arn
        self.image = image
        self.alias = alias
        self.environment = environment
        self.prefix = name_prefix
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.container_port = container_port
        self.readiness_path = readiness_path
        self.function_url_auth = function_url_auth
        self.base_url = base_url
        self.probe: Probe = probe or self.invoke_readiness
        self.poll_s = poll_s
        self._sleep = sleep
        self._clock = clock
        self.dry_run = dry_run
        self.workload_env = dict(workload_env or {})
        self.region = region
        self.session = session
        self.api_source_arn = api_source_arn
        self.subnets = list(subnets)
        self.security_groups = list(security_groups)
        self._url_signer: FunctionUrlAuth | None = None

    # ------------------------------------------------------------------ names and calls

    def function_name(self, service: str) -> str:
        name = f"{self.prefix}{check_name('service', service)}"
        if len(name) > MAX_FUNCTION_NAME:
            raise ConfigError(
                f"function name {name!r} has {len(name)} characters; Lambda allows {MAX_FUNCTION_NAME}"
            )
        return name

    def api_statement_id(self) -> str:
        """The ``StatementId`` of the service alias's permission for ``api_source_arn``: the same
        for the same alias and ARN, so a deploy finds the one an earlier deploy added."""
        digest = hashlib.sha256(f"{self.alias}\n{self.api_source_arn}".encode()).hexdigest()[:16]
        return API_STATEMENT_PREFIX + digest

    def _call(self, op: str, **params: Any) -> Any:
        try:
            return getattr(self.lam, op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            detail = f"{op}: {err.get('Code', '?')}: {err.get('Message', exc)}"
            if err.get("Code") == "ResourceNotFoundException":
                raise NotFoundError(detail) from None
            raise LambdaError(detail) from None

    # ------------------------------------------------------------------ reading

    def _function(self, service: str) -> dict[str, Any] | None:
        try:
            answer = self._call("get_function", FunctionName=self.function_name(service))
        except NotFoundError:
            return None
        return dict(answer)

    def _versions(self, service: str) -> dict[str, _Version]:
        """The service's published versions made by this provider, by revision name."""
        name = self.function_name(service)
        found: dict[str, _Version] = {}
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"FunctionName": name, "MaxItems": 50}
            if marker:
                params["Marker"] = marker
            try:
                page = self._call("list_versions_by_function", **params)
            except NotFoundError:
                return {}
            for config in page.get("Versions", []):
                meta = _meta(config.get("Description"))
                if config.get("Version") == "$LATEST" or meta is None:
                    continue
                found[meta["revision"]] = _Version(meta["revision"], dict(config), meta)
            marker = page.get("NextMarker")
            if not marker:
                return found

    def _alias(self, service: str, name: str | None = None) -> dict[str, Any] | None:
        """The alias ``name`` (default: the service's, ``alias``), None when there is none."""
        try:
            answer = self._call(
                "get_alias", FunctionName=self.function_name(service), Name=name or self.alias
            )
        except NotFoundError:
            return None
        return dict(answer)

    def _url_config(self, service: str, alias: str) -> dict[str, Any] | None:
        """The function URL config of ``alias``, None when it has none."""
        try:
            answer = self._call(
                "get_function_url_config", FunctionName=self.function_name(service), Qualifier=alias
            )
        except NotFoundError:
            return None
        return dict(answer)

    def _unready(self, function_arn: str) -> dict[str, str]:
        tags = self._call("list_tags", Resource=function_arn).get("Tags") or {}
        return {k[len(TAG_UNREADY) :]: str(v) for k, v in tags.items() if k.startswith(TAG_UNREADY)}

    @staticmethod
    def _weights(alias: Mapping[str, Any] | None) -> dict[str, float]:
        """Version -> percent, from the alias (main version: what the additional ones leave)."""
        if alias is None:
            return {}
        extra = {
            str(v): float(w) * 100.0
            for v, w in ((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}).items()
        }
        main = str(alias["FunctionVersion"])
        return {main: max(0.0, 100.0 - sum(extra.values())), **extra}

    def _status_of(
        self, version: _Version, weights: Mapping[str, float], unready: Mapping[str, str]
    ) -> RevisionStatus:
        config = version.config
        state = str(config.get("State") or "Active")
        update = str(config.get("LastUpdateStatus") or "Successful")
        health, reason = RevisionHealth.HEALTHY, None
        if state == "Failed" or update == "Failed":
            health = RevisionHealth.UNHEALTHY
            why = []
            if state == "Failed":
                why.append(
                    f"state Failed: {config.get('StateReason') or config.get('StateReasonCode') or '?'}"
                )
            if update == "Failed":
                text = config.get("LastUpdateStatusReason") or config.get("LastUpdateStatusReasonCode")
                why.append(f"last update Failed: {text or '?'}")
            reason = "; ".join(why)
        elif state == "Pending" or update == "InProgress":
            health, reason = RevisionHealth.STARTING, f"Lambda state {state}, last update {update}"
        elif version.revision in unready:
            health, reason = RevisionHealth.UNHEALTHY, unready[version.revision]
        elif state == "Inactive":
            health = RevisionHealth.DEGRADED
            reason = "inactive (idle): the next invocation re-activates it and fails until it is Active"
        return RevisionStatus(
            version.revision,
            str(version.meta.get("digest") or version.env.get(DIGEST_ENV, "")),
            int(version.meta.get("replicas") or 1),
            health,
            reason,
            weights.get(version.number, 0.0),
            (),
        )

    # ------------------------------------------------------------------ the protocol

    def deploy(self, service: str, revision: Revision, *, timeout_s: float = 180.0) -> RevisionStatus:
        check_name("revision", revision.name)
        revision_alias(revision.name)  # refused before anything is made
        name = self.function_name(service)
        image = revision.env.get(IMAGE_ENV) or self.image
        if not image:
            raise ConfigError(
                f"revision {revision.name} of {service}: no container image (set env {IMAGE_ENV} "
                "or the provider's image, [environments.NAME.aws] lambda_image)"
            )
        env = {k: v for k, v in revision.env.items() if k != IMAGE_ENV}
        meta = {
            "revision": revision.name,
            "digest": revision.artifact.digest,
            "env": _env_digest({**env, "MANGAASSIST_APP": revision.app}),
            "replicas": revision.replicas,
        }
        existing = self._versions(service)
        if revision.name in existing:
            return self._redeploy(service, existing[revision.name], meta, timeout_s)
        variables = {
            **self.workload_env,
            **env,
            "MANGAASSIST_REVISION": revision.name,
            "MANGAASSIST_SERVICE": service,
            "MANGAASSIST_APP": revision.app,
            "MANGAASSIST_PROVIDER": "aws",
            "AWS_LWA_PORT": str(self.container_port),
            "AWS_LWA_READINESS_CHECK_PATH": self.readiness_path,
            DIGEST_ENV: revision.artifact.digest,
        }
        if self.environment:
            variables["MANGAASSIST_ENV"] = self.environment
        configuration: dict[str, Any] = {
            "Environment": {"Variables": dict(sorted(variables.items()))},
            "MemorySize": self.memory_mb,
            "Timeout": self.timeout_s,
        }
        if self.subnets:  # set on every deploy, so a function made outside the VPC moves into it
            configuration["VpcConfig"] = {
                "SubnetIds": self.subnets,
                "SecurityGroupIds": self.security_groups,
            }
        function = self._function(service)
        if function is None:
            if not self.role_arn:
                raise ConfigError(
                    f"service {service}: function {name} does not exist and no execution role is set "
                    "to create it ([environments.NAME.aws] lambda_role_arn)"
                )
            self._call(
                "create_function",
                FunctionName=name,
                Role=self.role_arn,
                PackageType="Image",
                Code={"ImageUri": image},
                Tags={TAG_SERVICE: service},
                **configuration,
            )
        else:
            self._call("update_function_code", FunctionName=name, ImageUri=image)
            self._wait_update(name, timeout_s)
            self._call("update_function_configuration", FunctionName=name, **configuration)
        # the code as $LATEST has it once the updates are over: what the version must publish
        code_sha = self._wait_update(name, timeout_s).get("CodeSha256")
        params: dict[str, Any] = {"FunctionName": name, "Description": json.dumps(meta, sort_keys=True)}
        if code_sha:
            params["CodeSha256"] = code_sha
        published = self._call("publish_version", **params)
        version = str(published.get("Version") or "")
        if self._alias(service) is None:
            self._call("create_alias", FunctionName=name, Name=self.alias, FunctionVersion=version)
            if self.function_url_auth:
                self._call(
                    "create_function_url_config",
                    FunctionName=name,
                    Qualifier=self.alias,
                    AuthType=self.function_url_auth,
                )
        self._allow_api(service)
        self._pin_alias(service, revision.name, version)
        if self.dry_run:
            weight = 0.0 if existing else 100.0
            digest, replicas = revision.artifact.digest, revision.replicas
            return RevisionStatus(
                revision.name, digest, replicas, RevisionHealth.STARTING, "dry run", weight, ()
            )
        return self._settle(service, revision.name, timeout_s, probe=True)

    def _redeploy(
        self, service: str, live: _Version, meta: Mapping[str, Any], timeout_s: float
    ) -> RevisionStatus:
        differs = [k for k in ("digest", "env") if live.meta.get(k) != meta[k]]
        if differs:
            raise LambdaStateError(
                f"revision {live.revision} of {service} already exists (version {live.number}) with "
                f"another {', '.join('artifact' if k == 'digest' else 'app or env' for k in differs)}; "
                "deploy it under another name or retire it first"
            )
        self._allow_api(service)
        self._pin_alias(service, live.revision, live.number)
        return self._settle(service, live.revision, timeout_s, probe=False)

    def _allow_api(self, service: str) -> None:
        """With ``api_source_arn``: the service's alias lets API Gateway invoke it from that ARN
        (one ``AddPermission``, only when ``GetPolicy`` does not show the statement already; Lambda's
        ``ResourceConflictException`` means another deploy added it meanwhile). Without: nothing."""
        if not self.api_source_arn:
            return
        name, sid = self.function_name(service), self.api_statement_id()
        try:
            policy = self._call("get_policy", FunctionName=name, Qualifier=self.alias).get("Policy")
        except NotFoundError:  # no policy yet (or, in a dry run, no function yet)
            policy = None
        if sid in _statement_ids(policy):
            return
        try:
            self.lam.add_permission(
                FunctionName=name,
                Qualifier=self.alias,
                StatementId=sid,
                Action="lambda:InvokeFunction",
                Principal=API_PRINCIPAL,
                SourceArn=self.api_source_arn,
            )
        except ClientError as exc:
            err = exc.response.get("Error", {})
            if err.get("Code") == "ResourceConflictException":
                return  # the statement is there already
            raise LambdaError(f"add_permission: {err.get('Code', '?')}: {err.get('Message', exc)}") from None

    def _pin_alias(self, service: str, revision: str, version: str) -> None:
        """The revision's own alias (``revision_alias``) at its version, with a function URL when
        ``function_url_auth`` is set: what ``pin`` reaches. Each is made only when missing, so a live
        name deployed again (a resumed step, a deploy that stopped half way, a version published
        before pins were aliases) ends with both and changes nothing else."""
        name, alias = self.function_name(service), revision_alias(revision)
        found = self._alias(service, alias)
        if found is None:
            self._call(
                "create_alias",
                FunctionName=name,
                Name=alias,
                FunctionVersion=version,
                Description=f"pin: revision {revision} of {service}",
            )
        elif str(found.get("FunctionVersion")) != version or (found.get("RoutingConfig") or {}).get(
            "AdditionalVersionWeights"
        ):
            self._call(
                "update_alias",
                FunctionName=name,
                Name=alias,
                FunctionVersion=version,
                RoutingConfig={"AdditionalVersionWeights": {}},
            )
        if self.function_url_auth and self._url_config(service, alias) is None:
            self._call(
                "create_function_url_config",
                FunctionName=name,
                Qualifier=alias,
                AuthType=self.function_url_auth,
            )

    def _wait_update(self, name: str, timeout_s: float) -> dict[str, Any]:
        """Until ``$LATEST``'s last update is over (Lambda refuses the next change meanwhile): its
        configuration then (empty in a dry run)."""
        if self.dry_run:
            return {}
        deadline = self._clock() + timeout_s
        while True:
            config = self._call("get_function_configuration", FunctionName=name)
            status = config.get("LastUpdateStatus") or "Successful"
            if status == "Failed":
                raise LambdaError(
                    f"update of {name} failed: {config.get('LastUpdateStatusReasonCode') or ''} "
                    f"{config.get('LastUpdateStatusReason') or ''}".strip()
                )
            if status != "InProgress" and config.get("State") != "Pending":
                return dict(config)
            if self._clock() >= deadline:
                raise LambdaError(f"update of {name} still in progress after {timeout_s:g}s")
            self._sleep(self.poll_s)

    def _settle(self, service: str, revision: str, timeout_s: float, *, probe: bool) -> RevisionStatus:
        """Wait until the version is ``Active`` (or failed, or the time is out), then probe it."""
        deadline = self._clock() + timeout_s
        while True:
            status = self._revision_status(service, revision)
            if status.health is not RevisionHealth.STARTING:
                break
            if self._clock() >= deadline:
                return _replace(
                    status, RevisionHealth.UNHEALTHY, f"not active within {timeout_s:g}s: {status.reason}"
                )
            self._sleep(self.poll_s)
        if not probe or status.health is RevisionHealth.UNHEALTHY:
            return status
        function = self._function(service) or {}
        arn = str((function.get("Configuration") or {}).get("FunctionArn") or "")
        version = self._versions(service)[revision].number
        why = self.probe(self.function_name(service), version)
        if why is None:
            return status
        reason = f"not ready: {why}"
        if arn:
            self._call("tag_resource", Resource=arn, Tags={TAG_UNREADY + revision: reason[:256]})
        return _replace(status, RevisionHealth.UNHEALTHY, reason)

    def _revision_status(self, service: str, revision: str) -> RevisionStatus:
        versions = self._versions(service)
        if revision not in versions:
            raise NotFoundError(f"service {service} has no revision {revision!r} (its version is gone)")
        function = self._function(service) or {}
        arn = str((function.get("Configuration") or {}).get("FunctionArn") or "")
        unready = self._unready(arn) if arn else {}
        return self._status_of(versions[revision], self._weights(self._alias(service)), unready)

    def set_weights(self, service: str, weights: Mapping[str, float]) -> Mapping[str, float]:
        check_weights(weights)
        live = self._versions(service)
        for rev in weights:
            if rev not in live:
                raise NotFoundError(
                    f"service {service} has no revision {rev!r} (have: {', '.join(sorted(live)) or 'none'})"
                )
        routed = {rev: float(w) for rev, w in weights.items() if w > 0}
        if len(routed) > MAX_ROUTED_VERSIONS:
            raise NotSupportedError(
                f"weights of {service} over {len(routed)} revisions ({', '.join(sorted(routed))}): a Lambda "
                f"alias routes to its main version plus ONE additional weighted version, so at most "
                f"{MAX_ROUTED_VERSIONS} revisions can have weight"
            )
        alias = self._alias(service)
        if alias is None:
            raise NotFoundError(f"service {service} has no alias {self.alias!r} (deploy it first)")
        current_main = str(alias["FunctionVersion"])
        # the main version stays main when it keeps weight (fewer moving parts), else the heaviest
        by_version = {live[rev].number: w for rev, w in routed.items()}
        main = current_main if current_main in by_version else max(by_version, key=lambda v: by_version[v])
        extra = {v: round(w / 100.0, 6) for v, w in by_version.items() if v != main}
        self._call(
            "update_alias",
            FunctionName=self.function_name(service),
            Name=self.alias,
            FunctionVersion=main,
            RoutingConfig={"AdditionalVersionWeights": extra},
        )
        return routed

    def set_shadow(self, service: str, revision: str, share: float) -> Shadow:
        raise NotSupportedError(
            f"shadow of {service} on Lambda: an alias cannot mirror invocations (no shadow traffic on "
            "this provider; use a canary with pinned smoke tests)"
        )

    def clear_shadow(self, service: str) -> None:
        """Nothing to clear: this provider never mirrors."""

    def pin(self, service: str, revision: str) -> Pin:
        """The function URL of the revision's own alias (``rev-NAME``): a request there runs that
        version whatever the weights (the header only tells the workload the request is pinned).
        Also with ``base_url``: the pin bypasses the front (module docstring). When the URL's
        ``AuthType`` is ``AWS_IAM`` the pin's ``auth`` is ``url_signer()`` (SigV4; a customer's
        Bearer token moves to ``X-MangaAssist-Authorization``), with ``NONE`` it is None.
        ``NotFoundError`` for a revision that does not exist, or whose alias has no function URL
        (``function_url_auth`` unset, or a version deployed before pins were aliases: deploying it
        again makes the URL); ``ConfigError`` when an ``AWS_IAM`` URL cannot be signed for (no
        credentials, no region)."""
        if revision not in self._versions(service):
            raise NotFoundError(f"service {service} has no revision {revision!r}")
        alias = revision_alias(revision)
        config = self._url_config(service, alias)
        if config is None:
            raise NotFoundError(
                f"service {service}: revision {revision}'s alias {alias} has no function URL to pin "
                "to (set function_url_auth, [environments.NAME.aws] lambda_function_url_auth, and "
                "deploy the revision again)"
            )
        auth = self.url_signer() if (config.get("AuthType") or self.function_url_auth) == "AWS_IAM" else None
        return Pin(str(config["FunctionUrl"]), {PIN_HEADER: revision}, auth)

    def url_signer(self) -> FunctionUrlAuth:
        """What signs requests to ``AWS_IAM`` function URLs: one ``FunctionUrlAuth`` for the
        provider, in ``region`` (else the client's), with ``session``'s credentials (else a new boto3
        session's, its credential chain). ``ConfigError`` when there are no credentials or no region,
        before any request is sent."""
        if self._url_signer is None:
            region = self.region or getattr(getattr(self.lam, "meta", None), "region_name", None)
            session = self.session
            if session is None:
                import boto3

                session = self.session = boto3.Session(region_name=region)
            self._url_signer = FunctionUrlAuth(session.get_credentials, str(region or ""))
        self._url_signer.frozen()  # no credentials: the error now
        return self._url_signer

    def qualifier(self, service: str, headers: Mapping[str, str]) -> str:
        """The qualifier a direct invocation with ``headers`` runs: the version of the revision that
        ``X-MangaAssist-Revision`` names, else the alias (what ``invoke`` does; a front that maps
        the header can use it too). A revision that does not exist is ``NotFoundError``."""
        pinned = {k.lower(): v for k, v in headers.items()}.get(PIN_HEADER.lower())
        if not pinned:
            return self.alias
        versions = self._versions(service)
        if pinned not in versions:
            raise NotFoundError(f"service {service} has no revision {pinned!r} to pin to")
        return versions[pinned].number

    def invoke(self, service: str, event: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """Invoke the service (synchronously) with ``event``: the pinned version when ``headers``
        pin one (smoke tests), else the alias. Returns the function's JSON answer."""
        answer = self._call(
            "invoke",
            FunctionName=self.function_name(service),
            Qualifier=self.qualifier(service, headers),
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        body = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise LambdaError(f"invoke of {service}: {answer['FunctionError']}: {body[:500]!r}")
        result: dict[str, Any] = json.loads(body or b"{}")
        return result

    def invoke_readiness(self, function_name: str, version: str) -> str | None:
        """The default probe: invoke the version with a function-URL event ``GET readiness_path``
        (what the Lambda Web Adapter passes to the app); None when it answers 200."""
        event = readiness_event(self.readiness_path)
        try:
            answer = self._call(
                "invoke",
                FunctionName=function_name,
                Qualifier=version,
                InvocationType="RequestResponse",
                Payload=json.dumps(event).encode(),
            )
        except MangaAssistError as exc:
            return str(exc)
        body = answer["Payload"].read()
        if answer.get("FunctionError"):
            return f"{answer['FunctionError']}: {body[:300].decode(errors='replace')}"
        try:
            code = int(json.loads(body or b"{}").get("statusCode", 0))
        except (ValueError, AttributeError):
            return f"GET {self.readiness_path}: not an HTTP answer: {body[:300]!r}"
        return None if code == 200 else f"GET {self.readiness_path} answered {code}"

    def retire(
        self, service: str, revision: str, *, drain_timeout_s: float = 30.0, last: bool = False
    ) -> RevisionStatus:
        live = self._versions(service)
        mine = live.get(revision)
        if mine is None:
            raise NotFoundError(f"service {service} has no revision {revision!r}")
        alias = self._alias(service)
        if last and set(live) == {revision}:
            raise NotSupportedError(
                f"revision {revision} is the only revision of {service}, and a Lambda alias always "
                f"points at a version: {self.alias} cannot be left with none (deleting it would change "
                "the function URL users reach); deploy a fixed revision and move the traffic to it"
            )
        if alias is not None and str(alias["FunctionVersion"]) == mine.number:
            raise LambdaStateError(
                f"revision {revision} is the version alias {self.alias} points at "
                f"({self._weights(alias)[mine.number]:g}%); move its weight to another revision first"
            )
        weight = self._weights(alias).get(mine.number, 0.0)
        if weight > 0:
            raise LambdaStateError(f"revision {revision} still has weight {weight:g}%; move it to 0 first")
        name, pin_alias = self.function_name(service), revision_alias(revision)
        # the pin first: Lambda refuses to delete a version an alias points at
        with contextlib.suppress(NotFoundError):
            self._call("delete_function_url_config", FunctionName=name, Qualifier=pin_alias)
        with contextlib.suppress(NotFoundError):
            self._call("delete_alias", FunctionName=name, Name=pin_alias)
        self._call("delete_function", FunctionName=name, Qualifier=mine.number)
        function = self._function(service) or {}
        arn = str((function.get("Configuration") or {}).get("FunctionArn") or "")
        if arn and revision in self._unready(arn):
            self._call("untag_resource", Resource=arn, TagKeys=[TAG_UNREADY + revision])
        return RevisionStatus(
            revision, str(mine.meta.get("digest") or ""), 0, RevisionHealth.RETIRED, None, 0.0, ()
        )

    def status(self, service: str) -> ServiceStatus:
        function = self._function(service)
        if function is None:
            raise NotFoundError(f"no service {service!r}: no Lambda function {self.function_name(service)}")
        arn = str((function.get("Configuration") or {}).get("FunctionArn") or "")
        weights = self._weights(self._alias(service))
        unready = self._unready(arn) if arn else {}
        revisions = tuple(
            self._status_of(v, weights, unready) for _, v in sorted(self._versions(service).items())
        )
        return ServiceStatus(
            name=service,
            url=self.url(service),
            revisions=revisions,
            weights={r.name: r.weight for r in revisions if r.weight > 0},
            shadow=None,
        )

    def services(self) -> list[str]:
        names: list[str] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"MaxItems": 50}
            if marker:
                params["Marker"] = marker
            page = self._call("list_functions", **params)
            for f in page.get("Functions", []):
                fn = str(f["FunctionName"])
                if not fn.startswith(self.prefix) or not _NAME.match(fn[len(self.prefix) :]):
                    continue
                tags = self._call("list_tags", Resource=f["FunctionArn"]).get("Tags") or {}
                if tags.get(TAG_SERVICE) == fn[len(self.prefix) :]:
                    names.append(fn[len(self.prefix) :])
            marker = page.get("NextMarker")
            if not marker:
                return sorted(names)

    def url(self, service: str) -> str:
        if isinstance(self.base_url, str):
            return self.base_url
        if isinstance(self.base_url, Mapping) and service in self.base_url:
            return str(self.base_url[service])
        try:
            answer = self._call(
                "get_function_url_config", FunctionName=self.function_name(service), Qualifier=self.alias
            )
        except NotFoundError:
            raise NotFoundError(
                f"service {service}: alias {self.alias} has no function URL (deploy with function_url_auth, "
                "or give base_url: [environments.NAME.aws] app_url)"
            ) from None
        return str(answer["FunctionUrl"])


def readiness_event(path: str) -> dict[str, Any]:
    """A Lambda function URL (payload 2.0) event for ``GET path``."""
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "readiness.probe", "user-agent": "mangaassist-probe"},
        "requestContext": {"http": {"method": "GET", "path": path, "protocol": "HTTP/1.1"}},
        "body": base64.b64encode(b"").decode(),
        "isBase64Encoded": True,
    }


def _replace(status: RevisionStatus, health: RevisionHealth, reason: str) -> RevisionStatus:
    return RevisionStatus(
        status.name, status.digest, status.replicas, health, reason, status.weight, status.workers
    )
