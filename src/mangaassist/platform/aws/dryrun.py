"""Dry runs on AWS: the calls a pipeline would make, in order, none of them changing anything.

``DryRun.wrap(client)`` puts a boto3 client behind ``DryRunClient``. Every operation is classified
by its API name (``is_read``): reads (``Describe*``, ``Get*``, ``List*``, ``Query``, ``Scan``, ...)
and everything else, which may change something (``Create*``, ``Put*``, ``Update*``, ``Delete*``,
``Start*``, ``Invoke``, ...). A call that may change something never reaches botocore: its
parameters are checked against the operation's input shape (``botocore.validate``: a parameter AWS
would refuse fails the dry run as it would fail the deploy), it is recorded, and it is answered with
a response made from the operation's output shape (``synthesize``: every member present, one
element per list, strings from ``placeholder``), so the provider goes on as if AWS had
accepted it. Nothing below botocore's API layer sees it: a ``Stubber`` with no queued response
for it would raise, which is how the tests prove it.

Reads are made when the client can sign them (credentials found; against the environment's
``endpoint_url``, a moto server, if it has one): the plan is then made against what exists. Without
credentials they are not made either: they are recorded as not made and answered as in an
environment where CD-02's resources exist and hold nothing of the pipeline's yet: lists are empty,
an object read (``Head*``, an S3 ``GetObject``) is not found, a DynamoDB ``GetItem`` has no item,
and other reads of one resource (a distribution, an application) answer it with placeholder values.
The plan says which (``DryRun.reads_made``).

An S3 object the dry run put (or copied) is read back by the steps after it, from memory: a
release uploaded before it is published, a model's artifact before it is registered.

A read repeated with the same parameters after a recorded change (a provider polling for a change
that was never made: a service's health, a change set's status) is answered up to ``MAX_POLLS``
times, then ``DryRunWait`` stops the step: a dry run cannot wait for AWS to act on calls it did not
make.

``OpenSearchDryRun`` does the same for the knowledge base's OpenSearch transport (writes: every
method but GET and HEAD, except the search endpoints).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions
import botocore.session
from botocore.exceptions import ClientError, ParamValidationError
from botocore.response import StreamingBody
from botocore.validate import validate_parameters

READ_PREFIXES = (
    "Describe",
    "Get",
    "List",
    "Head",
    "Query",
    "Scan",
    "BatchGet",
    "Search",
    "Lookup",
    "Select",
    "Validate",
    "Estimate",
    "Check",
)
"""API operation names that only read (botocore's ``OperationModel.name``)."""
READ_OPERATIONS = frozenset(
    {
        "StartConfigurationSession",  # appconfigdata: opens a read session, changes nothing
        "InvokeModel",  # bedrock-runtime: an embedding, read-only (the knowledge base's queries)
        "DetectStackDrift",  # records a drift detection, changes no resource
    }
)
"""Operations that read although their names do not say so."""
MAX_POLLS = 3
"""How often the same read is answered after a recorded change before ``DryRunWait``."""
_MAX_DEPTH = 8
_LONGEST_LIST = 50
_LONGEST_TEXT = 2000
"""A plan shows longer parameters shortened (a bulk request's lines, a template's text)."""


class DryRunWait(RuntimeError):
    """A provider polls for a change a dry run did not make."""


def is_read(operation: str) -> bool:
    return operation in READ_OPERATIONS or operation.startswith(READ_PREFIXES)


@dataclass(frozen=True)
class Call:
    """One call of a dry run."""

    service: str
    operation: str
    params: dict[str, Any]
    read: bool
    made: bool
    """Sent to AWS (a read with credentials); never true for a call that may change something."""
    step: str | None = None
    """The pipeline step that made it (``DryRun.step`` when it was recorded)."""

    def as_dict(self) -> dict[str, Any]:
        out = {
            "service": self.service,
            "operation": self.operation,
            "params": _jsonable(self.params),
            "read": self.read,
            "made": self.made,
        }
        return out if self.step is None else {**out, "step": self.step}


@dataclass
class DryRun:
    """The calls of one dry run, in order, from every client it wraps (thread-safe)."""

    reads_made: bool = True
    """False: no credentials, so reads are not made either: answered as an environment whose CD-02
    resources hold nothing of the pipeline's yet (module docstring)."""
    calls: list[Call] = field(default_factory=list)
    step: str | None = None
    """The pipeline step the calls are made for (set by the dry-run driver), recorded with each."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _polls: dict[str, int] = field(default_factory=dict)
    _objects: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(dataclasses.replace(call, step=self.step))
            if not call.read:
                self._polls.clear()

    def write(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """Remember an S3 object put or copied by the dry run, so the steps after read it back."""
        if service != "s3" or operation not in ("PutObject", "CopyObject"):
            return
        body: Any = params.get("Body", b"")
        if operation == "CopyObject":
            source = params.get("CopySource")
            if isinstance(source, dict):
                key = (str(source.get("Bucket")), str(source.get("Key")))
            else:
                bucket, _, rest = str(source).lstrip("/").partition("/")
                key = (bucket, rest)
            body = self._objects.get(key, b"")
        elif isinstance(body, str):
            body = body.encode()
        elif hasattr(body, "read"):
            body = body.read()
        with self._lock:
            self._objects[(str(params.get("Bucket")), str(params.get("Key")))] = bytes(body)

    def written(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a read of an S3 object this dry run wrote (None: not one)."""
        if service != "s3" or operation not in ("GetObject", "HeadObject"):
            return None
        with self._lock:
            body = self._objects.get((str(params.get("Bucket")), str(params.get("Key"))))
        if body is None:
            return None
        answer: dict[str, Any] = {"ContentLength": len(body), "ETag": '"dry-run"'}
        if operation == "GetObject":
            answer["Body"] = StreamingBody(io.BytesIO(body), len(body))
        return answer

    def polled(self, service: str, operation: str, params: dict[str, Any]) -> None:
        """Count a read made after a recorded change; raise ``DryRunWait`` past ``MAX_POLLS``."""
        with self._lock:
            if not any(not c.read for c in self.calls):
                return
            key = json.dumps([service, operation, _jsonable(params)], sort_keys=True)
            self._polls[key] = self._polls.get(key, 0) + 1
            if self._polls[key] > MAX_POLLS:
                raise DryRunWait(
                    f"dry run: {service} {operation} was polled {MAX_POLLS} times for a change this dry "
                    "run did not make; the plan ends here (the rest depends on what AWS does with the "
                    "calls above)"
                )

    @property
    def changes(self) -> list[Call]:
        return [c for c in self.calls if not c.read]

    def as_list(self) -> list[dict[str, Any]]:
        return [call.as_dict() for call in self.calls]

    def wrap(self, client: Any) -> DryRunClient:
        return DryRunClient(client, self)


class DryRunClient:
    """A boto3 client whose calls go through ``DryRun`` (module docstring); anything else (``meta``,
    ``exceptions``, waiters) is the client's own."""

    def __init__(self, client: Any, run: DryRun) -> None:
        self._client = client
        self._run = run
        self._service = str(client.meta.service_model.service_name)
        self._api = dict(client.meta.method_to_api_mapping)

    def __getattr__(self, name: str) -> Any:
        api = self._api.get(name)
        if api is None:
            return getattr(self._client, name)
        return self._operation(name, api)

    def get_paginator(self, name: str) -> Any:
        api = self._api[name]
        if self._run.reads_made or not is_read(api):
            return self._client.get_paginator(name)
        return _EmptyPaginator(self._operation(name, api))

    def _operation(self, method: str, api: str) -> Callable[..., Any]:
        model = self._client.meta.service_model.operation_model(api)
        read = is_read(api)

        def call(**params: Any) -> Any:
            written = self._run.written(self._service, api, params)
            if written is not None:  # an S3 object this dry run "wrote": read back what it was given
                self._run.record(Call(self._service, api, dict(params), read=True, made=False))
                return written
            if read:
                self._run.polled(self._service, api, params)
            if read and self._run.reads_made:
                self._run.record(Call(self._service, api, dict(params), read=True, made=True))
                return getattr(self._client, method)(**params)
            if model.input_shape is not None:
                try:
                    validate_parameters(_as_sent(params), model.input_shape)
                except ParamValidationError as exc:
                    report = exc.kwargs.get("report", str(exc))
                    raise ParamValidationError(report=f"(dry run, {self._service} {api}) {report}") from None
            self._run.record(Call(self._service, api, dict(params), read=read, made=False))
            self._run.write(self._service, api, params)
            if read:
                missing = _absent(self._service, api)
                if missing is not None:
                    answer: Any = {"Error": missing, "ResponseMetadata": {"HTTPStatusCode": 404}}
                    raise ClientError(answer, api)
                if (self._service, api) in _EMPTY_READS:
                    return {}
            return synthesize(
                model.output_shape, api, empty=read, service=self._service, serial=len(self._run.calls)
            )

        call.__name__ = method
        return call


_EMPTY_READS = frozenset({("dynamodb", "GetItem")})
"""Reads answered ``{}`` in an empty account (no ``Item``)."""


def _absent(service: str, operation: str) -> dict[str, str] | None:
    """The error a read of one object answers in an empty account, if it is one (``Head*``, an S3
    object); other reads of one resource answer it as present (CD-02 creates those)."""
    if operation.startswith("Head"):
        return {"Code": "404", "Message": "Not Found"}
    if (service, operation) == ("s3", "GetObject"):
        return {"Code": "NoSuchKey", "Message": "The specified key does not exist."}
    return None


class _EmptyPaginator:
    def __init__(self, operation: Callable[..., Any]) -> None:
        self._operation = operation

    def paginate(self, **params: Any) -> Iterator[Any]:
        params.pop("PaginationConfig", None)
        yield self._operation(**params)


def synthesize(
    shape: Any, operation: str, *, empty: bool = False, service: str = "", serial: int = 0
) -> dict[str, Any]:
    """A response of ``shape`` (botocore's output shape): every member, one element per list
    (``empty``: none, an account where nothing exists), strings from ``placeholder``
    (an enum's first value); ``serial`` (the call's place in the dry run) keeps the ids of two
    resources made by the same operation apart."""
    if shape is None:
        return {}
    tokens = page_tokens(service, operation) if empty and service else frozenset()
    value = _value(shape, f"{operation}-{serial}" if serial else operation, "", empty, 0, set(), tokens)
    return value if isinstance(value, dict) else {}


def is_placeholder(value: str) -> bool:
    """Whether ``value`` is one ``placeholder`` made (an ARN or name of something a dry run did not
    create: nothing to look up)."""
    return value.startswith(("arn:aws:dry-run:", "dry-run-"))


_HOSTS = ("Domain", "Host", "Url", "URL", "Endpoint", "Location", "Address")


def placeholder(operation: str, member: str) -> str:
    """A string member's value in a synthesized response: an ARN for ``...Arn``, a host under the
    reserved ``.invalid`` domain for a name, URL or endpoint (nothing resolves it), else
    ``dry-run-OPERATION-MEMBER``."""
    if member.endswith(("Arn", "ARN")):
        return f"arn:aws:dry-run:us-east-1:000000000000:{operation}/{member}"
    if any(word in member for word in _HOSTS):
        return f"dry-run-{operation.lower()}-{member.lower()}.invalid"
    return f"dry-run-{operation}-{member}"


def page_tokens(service: str, operation: str) -> frozenset[str]:
    """The members of ``operation``'s answer that say another page follows (botocore's paginator
    model: ``output_token``, ``more_results``); an answer made up for an empty account leaves them
    out, or a paginating provider would never stop."""
    try:
        config = _paginators(service).get_paginator(operation)
    except (ValueError, LookupError):
        return frozenset({"NextToken", "nextToken", "LastEvaluatedKey"})  # no paginator: the usual
    names = config.get("output_token", [])
    names = [names] if isinstance(names, str) else list(names)
    if config.get("more_results"):
        names.append(config["more_results"])
    return frozenset(n.split(".")[0].split("[")[0] for n in names)


@functools.cache
def _paginators(service: str) -> Any:
    try:
        return botocore.session.get_session().get_paginator_model(service)
    except botocore.exceptions.UnknownServiceError:
        raise LookupError(service) from None
    except botocore.exceptions.DataNotFoundError:
        raise LookupError(service) from None


def _value(
    shape: Any,
    operation: str,
    member: str,
    empty: bool,
    depth: int,
    seen: set[str],
    tokens: frozenset[str] = frozenset(),
) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if depth >= _MAX_DEPTH or shape.name in seen:
            return {}
        inner = seen | {shape.name}
        return {
            name: _value(m, operation, name, empty, depth + 1, inner)
            for name, m in shape.members.items()
            if not m.serialization.get("eventstream") and not (empty and depth == 0 and name in tokens)
        }
    if kind == "list":
        if empty or depth >= _MAX_DEPTH:
            return []
        return [_value(shape.member, operation, member, empty, depth + 1, seen)]
    if kind == "map":
        return {}
    if kind == "string":
        enum = getattr(shape, "enum", None)
        return enum[0] if enum else placeholder(operation, member)
    if kind in ("integer", "long"):
        return 0
    if kind in ("float", "double"):
        return 0.0
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return datetime.now(UTC)
    if kind == "blob":
        if shape.serialization.get("streaming"):
            return StreamingBody(io.BytesIO(b""), 0)
        return b""
    return None


class OpenSearchDryRun:
    """An ``opensearchpy.OpenSearch`` whose transport records writes instead of sending them."""

    def __init__(self, client: Any, run: DryRun) -> None:
        self._client = client
        self.transport = _RecordingTransport(client.transport, run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


_SEARCH_ENDPOINTS = ("/_search", "/_count", "/_mget", "/_msearch")


class _RecordingTransport:
    def __init__(self, transport: Any, run: DryRun) -> None:
        self._transport = transport
        self._run = run

    def perform_request(self, method: str, url: str, params: Any = None, body: Any = None) -> Any:
        read = method in ("GET", "HEAD") or url.split("?")[0].endswith(_SEARCH_ENDPOINTS)
        detail = {"method": method, "url": url, "params": params or {}, "body": body}
        if read and self._run.reads_made:
            self._run.record(Call("opensearch", f"{method} {url}", detail, read=True, made=True))
            return self._transport.perform_request(method, url, params=params, body=body)
        if read:  # no credentials: a domain that holds nothing yet
            self._run.record(Call("opensearch", f"{method} {url}", detail, read=True, made=False))
            path = url.split("?")[0]
            if path.endswith(_SEARCH_ENDPOINTS[:1]):
                return {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}
            if path.endswith("/_count"):
                return {"count": 0}
            if "/_doc/" in path:
                return {"found": False}
            return {}
        self._run.record(Call("opensearch", f"{method} {url}", detail, read=False, made=False))
        return {"acknowledged": True, "errors": False, "items": [], "result": "dry-run"}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _as_sent(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as botocore's own handlers turn them before validation (an S3 ``CopySource``
    given as a dict becomes ``BUCKET/KEY``)."""
    source = params.get("CopySource")
    if not isinstance(source, dict):
        return params
    text = f"{source.get('Bucket')}/{source.get('Key')}"
    if source.get("VersionId"):
        text += f"?versionId={source['VersionId']}"
    return {**params, "CopySource": text}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) > _LONGEST_LIST:
            head = [_jsonable(v) for v in value[:3]]
            return [*head, f"... {len(value) - 3} more"]
        return [_jsonable(v) for v in value]
    if isinstance(value, str) and len(value) > _LONGEST_TEXT:
        return f"{value[:200]}... ({len(value)} characters)"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "read"):
        return "<stream>"
    return str(value)
