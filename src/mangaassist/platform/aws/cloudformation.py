"""Applying a CloudFormation template through a change set (CD-02, infrastructure as code).

The CDK app synthesizes one template per stack; this module is the *apply* step, on a boto3
``cloudformation`` client (injected). One stack at a time:

* ``ChangeSetApplier.create`` picks the change-set type with ``DescribeStacks``: a stack that does
  not exist (``ValidationError`` "... does not exist") or that is ``REVIEW_IN_PROGRESS`` (made by an
  earlier CREATE change set never executed) is ``CREATE``, any other ``UPDATE``. A stack that can
  only be deleted or repaired (``ROLLBACK_COMPLETE``, ``ROLLBACK_FAILED``, ``DELETE_FAILED``,
  ``UPDATE_ROLLBACK_FAILED``...) is an error saying so. The change set is named from the inputs:
  ``mangaassist-<sha256[:12]>`` of the template, the parameters and the tags (``change_set_name``),
  so a retried step finds its own change set (``DescribeChangeSet``) and reuses it instead of
  making a second one. A found change set that can no longer be executed (``OBSOLETE``,
  ``EXECUTE_FAILED``, or ``FAILED`` for a reason other than "no changes") is deleted and made
  again. Then ``DescribeChangeSet`` is polled (every ``poll_s``) until ``CREATE_COMPLETE`` (its
  ``Changes`` read over every ``NextToken`` page) or ``FAILED``. A change set that failed because
  the template changes nothing ("The submitted information didn't contain changes", "No updates are
  to be performed") is deleted and returned with ``empty=True``; any other failure raises
  ``ChangeSetFailedError`` with CloudFormation's reason (the change set is kept to be looked at).
* ``ChangeSet.destructive(STATEFUL_TYPES)`` lists what a gate should stop on: removals and
  replacements (``Replacement`` ``True`` or ``Conditional``) of resources that hold data.
  ``ResourceChange.policy_action`` says whether CloudFormation would keep the old resource
  (``Retain``/``ReplaceAndRetain``, from the ``DeletionPolicy``); it is informative, the list does
  not leave those out.
* ``execute`` runs ``ExecuteChangeSet`` (not for an empty change set, which returns the stack's
  current state, nor for one already executing, which is only waited for), then polls
  ``DescribeStacks`` until the stack leaves ``*_IN_PROGRESS``. ``CREATE_COMPLETE``,
  ``UPDATE_COMPLETE`` and ``IMPORT_COMPLETE`` succeed and return a ``StackResult`` with the stack's
  outputs; anything else (``*_FAILED``, ``*ROLLBACK_COMPLETE``) raises ``StackFailedError`` with the
  stack's status reason and the first failed resources of this operation (``DescribeStackEvents``,
  newest first, read back to the stack's "User Initiated" event; events whose reason is only
  "Resource ... cancelled" are left out when others explain more). It relies, like ``aws
  cloudformation deploy``, on ``ExecuteChangeSet`` having moved the stack to ``*_IN_PROGRESS``
  before it returns. ``progress`` hears ``"stack NAME: STATUS"`` each time the status changes.
* ``detect_drift``: ``DetectStackDrift``, ``DescribeStackDriftDetectionStatus`` until
  ``DETECTION_COMPLETE`` or ``DETECTION_FAILED``, then ``DescribeStackResourceDrifts`` (``MODIFIED``
  and ``DELETED``, every page) unless the stack is in sync. The report's status is ``DRIFTED``,
  ``IN_SYNC`` (only when detection completed) or ``UNKNOWN``. A drifted resource's differences are
  property paths and difference types only, never values (a value may be a secret).

Waiting: every wait ends after ``timeout_s`` with ``StackTimeoutError`` naming the stack and its
last status. Time waited is the larger of the clock's elapsed time and the sum of the sleeps asked
for, so an injected no-op ``sleep`` still times out (after ``timeout_s / poll_s`` polls).

Errors: a stack name CloudFormation would refuse, an empty template or one over the 51,200 bytes
``TemplateBody`` takes is ``ConfigError`` before any call. Any other refused call is
``CloudFormationError`` naming the operation and AWS's code and message. Messages never hold
parameter values or the template.

Status: request and response shapes are unit-tested with botocore's ``Stubber`` on a real client
(``tests/unit/platform/test_cloudformation.py``). It has not run against a real account yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from mangaassist.core.errors import ConfigError, MangaAssistError
from mangaassist.core.resources import STATEFUL_TYPES

DEFAULT_CAPABILITIES: tuple[str, ...] = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
CHANGE_SET_PREFIX = "mangaassist-"
TEMPLATE_BODY_LIMIT = 51_200
"""``CreateChangeSet``'s ``TemplateBody`` limit in bytes; a larger template needs ``TemplateURL``."""
STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")

_EMPTY_REASONS = ("didn't contain changes", "no updates are to be performed")
_SUCCESS = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
_UNUSABLE = {
    "ROLLBACK_COMPLETE": "its creation failed and was rolled back: delete the stack, then apply again",
    "ROLLBACK_FAILED": "its creation failed and the rollback too: delete the stack, then apply again",
    "DELETE_FAILED": "a deletion failed: finish deleting the stack, then apply again",
    "UPDATE_ROLLBACK_FAILED": "an update's rollback failed: continue the rollback "
    "(ContinueUpdateRollback), then apply again",
    "IMPORT_ROLLBACK_FAILED": "an import's rollback failed: repair the stack, then apply again",
}
_START_STATUSES = frozenset({"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "IMPORT_IN_PROGRESS"})
_MAX_EVENT_PAGES = 10
_MAX_REASONS = 5

ChangeSetType = Literal["CREATE", "UPDATE"]
DriftStatus = Literal["IN_SYNC", "DRIFTED", "UNKNOWN"]


class CloudFormationError(MangaAssistError):
    """CloudFormation refused a call, or a stack or change set is not in a state to go on with.

    ``operation`` and ``code`` are set when AWS answered with an error (``code`` is AWS's)."""

    def __init__(self, message: str, *, operation: str = "", code: str = "", aws_message: str = "") -> None:
        super().__init__(message)
        self.operation = operation
        self.code = code
        self.aws_message = aws_message


class ChangeSetFailedError(CloudFormationError):
    """A change set ended ``FAILED`` for a reason other than "no changes" (a bad template...)."""


class StackFailedError(CloudFormationError):
    """A stack operation ended in a failed or rolled-back state; ``reasons`` lists what failed."""

    def __init__(self, message: str, *, stack_name: str, status: str, reasons: Sequence[str]) -> None:
        super().__init__(message)
        self.stack_name = stack_name
        self.status = status
        self.reasons = list(reasons)


class StackTimeoutError(CloudFormationError):
    """A wait ran past ``timeout_s``; the message names the stack and the last status seen."""


@dataclass(frozen=True)
class ResourceChange:
    """One ``Changes[].ResourceChange`` of a change set."""

    action: str
    """``Add``, ``Modify``, ``Remove``, ``Import``, ``Dynamic`` (or a newer action AWS adds)."""
    logical_id: str
    resource_type: str
    replacement: str | None = None
    """``True``, ``False``, ``Conditional`` for a ``Modify``; None otherwise."""
    scope: list[str] = field(default_factory=list)
    physical_id: str | None = None
    policy_action: str | None = None
    """What the ``DeletionPolicy``/``UpdateReplacePolicy`` does (``Delete``, ``Retain``,
    ``ReplaceAndRetain``...), when CloudFormation says."""

    @property
    def replaces(self) -> bool:
        """Whether the change may make a new resource and delete the old one."""
        return self.replacement in ("True", "Conditional")

    def describe(self) -> str:
        """``Remove Orders (AWS::DynamoDB::Table)`` / ``Modify ... replacement=True``: for reports."""
        text = f"{self.action} {self.logical_id} ({self.resource_type})"
        return f"{text} replacement={self.replacement}" if self.replacement else text


@dataclass(frozen=True)
class ChangeSet:
    """A change set ready to execute, or ``empty`` (the template changes nothing; already deleted)."""

    stack_name: str
    name: str
    id: str
    type: ChangeSetType
    empty: bool
    changes: list[ResourceChange] = field(default_factory=list)
    execution_status: str = "AVAILABLE"
    """``AVAILABLE`` for a new one; ``EXECUTE_IN_PROGRESS`` when a reused one is already running."""

    def destructive(self, stateful_types: frozenset[str] = STATEFUL_TYPES) -> list[ResourceChange]:
        """Removals and replacements (``True`` or ``Conditional``) of ``stateful_types``."""
        return [
            c
            for c in self.changes
            if c.resource_type in stateful_types and (c.action == "Remove" or c.replaces)
        ]


@dataclass(frozen=True)
class StackResult:
    """A stack after ``execute``: its status, outputs and whether a change set ran."""

    stack_name: str
    status: str
    executed: bool
    stack_id: str = ""
    status_reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftedResource:
    """A resource that differs from the template: ``status`` is ``MODIFIED`` or ``DELETED``;
    ``differences`` are ``"PATH DIFFERENCE_TYPE"`` (``/BillingMode NOT_EQUAL``), without values."""

    logical_id: str
    resource_type: str
    status: str
    differences: list[str] = field(default_factory=list)
    physical_id: str | None = None


@dataclass(frozen=True)
class DriftReport:
    """The result of one drift detection on one stack."""

    stack_name: str
    status: DriftStatus
    drifted: list[DriftedResource] = field(default_factory=list)
    reason: str = ""
    """``DetectionStatusReason`` (why detection failed or was partial), when AWS gives one."""


def check_stack_name(stack_name: str) -> str:
    """``stack_name`` when CloudFormation accepts it (a letter, then up to 127 letters, digits, '-')."""
    if not isinstance(stack_name, str) or not STACK_NAME.fullmatch(stack_name):
        raise ConfigError(
            f"stack name {stack_name!r} is not valid for CloudFormation (a letter, then at most 127 "
            "letters, digits and '-')"
        )
    return stack_name


def change_set_name(
    template_body: str, parameters: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
) -> str:
    """``mangaassist-<12 hex>``: the same inputs give the same name, so a retried step finds its change
    set. Tags are hashed too: a tag change alone is a change to apply."""
    digest = hashlib.sha256(
        json.dumps(
            {"template": template_body, "parameters": dict(parameters or {}), "tags": dict(tags or {})},
            sort_keys=True,
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    return f"{CHANGE_SET_PREFIX}{digest[:12]}"


def _is_empty_reason(reason: str) -> bool:
    lowered = reason.lower()
    return any(marker in lowered for marker in _EMPTY_REASONS)


def _resource_change(raw: Mapping[str, Any]) -> ResourceChange:
    rc = raw.get("ResourceChange", {})
    return ResourceChange(
        action=str(rc.get("Action", "")),
        logical_id=str(rc.get("LogicalResourceId", "")),
        resource_type=str(rc.get("ResourceType", "")),
        replacement=rc.get("Replacement"),
        scope=[str(s) for s in rc.get("Scope", [])],
        physical_id=rc.get("PhysicalResourceId"),
        policy_action=rc.get("PolicyAction"),
    )


class _Wait:
    """A deadline: elapsed time is the larger of the clock's and the sleeps asked for."""

    def __init__(self, applier: ChangeSetApplier) -> None:
        self._a = applier
        self._start = applier._clock()
        self._slept = 0.0

    def sleep_or_raise(self, what: str, status: str) -> None:
        elapsed = max(self._a._clock() - self._start, self._slept)
        if elapsed >= self._a.timeout_s:
            raise StackTimeoutError(f"{what}: still {status} after {self._a.timeout_s:g}s")
        self._slept += self._a.poll_s
        self._a._sleep(self._a.poll_s)


class ChangeSetApplier:
    """Create, execute and check CloudFormation change sets on one injected boto3 client.

    ``cloudformation``: a boto3 ``cloudformation`` client. ``sleep``/``clock``: how waits pass
    (tests inject fakes). ``poll_s``: between two polls. ``timeout_s``: the longest any one wait
    (change set, stack operation, drift detection) may take; stacks with search domains or CDNs take
    tens of minutes, hence the hour by default."""

    def __init__(
        self,
        cloudformation: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 10.0,
        timeout_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        s3: Any = None,
        template_bucket: str | None = None,
    ) -> None:
        if poll_s <= 0 or timeout_s <= 0:
            raise ConfigError(f"poll_s ({poll_s:g}) and timeout_s ({timeout_s:g}) must be positive")
        self.cf = cloudformation
        self.s3 = s3
        self.template_bucket = template_bucket
        """Where a template over ``TEMPLATE_BODY_LIMIT`` is uploaded (``cloudformation/STACK/NAME.json``)
        for the change set to read by ``TemplateURL``; None: such a template is refused."""
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def from_env(cls, region: str | None = None, **options: Any) -> ChangeSetApplier:
        """A real client for ``region`` (default ``AWS_REGION``/``AWS_DEFAULT_REGION``); credentials
        come from boto3's usual chain."""
        import boto3

        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("no AWS region: pass region= or set AWS_REGION")
        session: Any = boto3.session.Session(region_name=region)
        return cls(session.client("cloudformation"), **options)

    # -- change sets -------------------------------------------------------------------------------

    def _upload(self, stack_name: str, name: str, template_body: str) -> str:
        """Put a large template in the template bucket; the URL a change set reads it from."""
        key = f"cloudformation/{stack_name}/{name}.json"
        try:
            self.s3.put_object(
                Bucket=self.template_bucket,
                Key=key,
                Body=template_body.encode(),
                ContentType="application/json",
                ServerSideEncryption="aws:kms",
            )
        except (ClientError, BotoCoreError) as exc:
            raise CloudFormationError(
                f"stack {stack_name}: cannot upload its template to s3://{self.template_bucket}/{key}: {exc}",
                operation="put_object",
            ) from exc
        return f"https://{self.template_bucket}.s3.amazonaws.com/{key}"

    def create(
        self,
        stack_name: str,
        template_body: str,
        *,
        tags: Mapping[str, str],
        parameters: Mapping[str, str] | None = None,
        capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
        progress: Callable[[str], None] | None = None,
    ) -> ChangeSet:
        """The change set taking ``stack_name`` to ``template_body``, created (or found) and described.

        ``tags`` go on the stack and every resource that takes tags; ``parameters`` are the
        template's (values never appear in errors)."""
        check_stack_name(stack_name)
        if not template_body or not template_body.strip():
            raise ConfigError(f"stack {stack_name}: the template is empty")
        size = len(template_body.encode())
        if size > TEMPLATE_BODY_LIMIT and (self.s3 is None or not self.template_bucket):
            raise ConfigError(
                f"stack {stack_name}: the template is {size} bytes, over the {TEMPLATE_BODY_LIMIT} "
                "CloudFormation takes inline, and no template bucket is set to upload it to "
                "([environments.ENV.aws] artifact_bucket)"
            )
        stack = self._stack(stack_name)
        kind: ChangeSetType = "UPDATE"
        if stack is None or stack.get("StackStatus") == "REVIEW_IN_PROGRESS":
            kind = "CREATE"
        elif (status := str(stack.get("StackStatus"))) in _UNUSABLE:
            raise CloudFormationError(f"stack {stack_name} is {status}: {_UNUSABLE[status]}")
        name = change_set_name(template_body, parameters, tags)
        found = None if stack is None else self._find_change_set(stack_name, name)
        if found is not None and (
            found.get("ExecutionStatus") in ("OBSOLETE", "EXECUTE_FAILED")
            or str(found.get("Status", "")).startswith("DELETE_")
            or (found.get("Status") == "FAILED" and not _is_empty_reason(str(found.get("StatusReason", ""))))
        ):
            self.delete_change_set(stack_name, name)
            found = None
        if found is None:
            template: dict[str, str] = {"TemplateBody": template_body}
            if size > TEMPLATE_BODY_LIMIT:
                template = {"TemplateURL": self._upload(stack_name, name, template_body)}
            self._call(
                "create_change_set",
                StackName=stack_name,
                ChangeSetName=name,
                ChangeSetType=kind,
                **template,
                Parameters=[
                    {"ParameterKey": k, "ParameterValue": v} for k, v in sorted((parameters or {}).items())
                ],
                Capabilities=list(capabilities),
                Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())],
            )
        return self._wait_change_set(stack_name, name, kind, found, progress)

    def delete_change_set(self, stack_name: str, name: str) -> None:
        """Delete a change set; one that is already gone is not an error."""
        try:
            self._call("delete_change_set", StackName=stack_name, ChangeSetName=name)
        except CloudFormationError as exc:
            if not _not_found(exc):
                raise

    # -- stacks ------------------------------------------------------------------------------------

    def execute(self, change_set: ChangeSet, *, progress: Callable[[str], None] | None = None) -> StackResult:
        """Execute ``change_set`` and wait for the stack; an empty change set only reads the stack."""
        stack_name = change_set.stack_name
        if change_set.empty:
            stack = self._stack(stack_name)
            if stack is None:
                raise CloudFormationError(f"stack {stack_name} does not exist")
            return _result(stack, executed=False)
        if change_set.execution_status == "AVAILABLE":
            self._call("execute_change_set", ChangeSetName=change_set.name, StackName=stack_name)
        elif change_set.execution_status not in ("EXECUTE_IN_PROGRESS", "EXECUTE_COMPLETE"):
            raise CloudFormationError(
                f"change set {change_set.name} of stack {stack_name} is {change_set.execution_status}: "
                "it cannot be executed (create it again)"
            )
        return self._wait_stack(stack_name, progress)

    def detect_drift(self, stack_name: str, *, progress: Callable[[str], None] | None = None) -> DriftReport:
        """Run drift detection on ``stack_name`` and report the resources that differ."""
        check_stack_name(stack_name)
        detection = str(self._call("detect_stack_drift", StackName=stack_name)["StackDriftDetectionId"])
        wait, last = _Wait(self), ""
        while True:
            got = self._call("describe_stack_drift_detection_status", StackDriftDetectionId=detection)
            state = str(got.get("DetectionStatus", ""))
            if state != last and progress is not None:
                progress(f"stack {stack_name}: drift {state}")
            last = state
            if state in ("DETECTION_COMPLETE", "DETECTION_FAILED"):
                break
            wait.sleep_or_raise(f"drift detection of stack {stack_name}", state)
        aws_status = got.get("StackDriftStatus")
        status: DriftStatus = "UNKNOWN"
        if aws_status == "DRIFTED":
            status = "DRIFTED"
        elif aws_status == "IN_SYNC" and state == "DETECTION_COMPLETE":
            status = "IN_SYNC"
        drifted: list[DriftedResource] = []
        if status != "IN_SYNC":
            for item in self._pages(
                "describe_stack_resource_drifts",
                "StackResourceDrifts",
                StackName=stack_name,
                StackResourceDriftStatusFilters=["MODIFIED", "DELETED"],
            ):
                drifted.append(
                    DriftedResource(
                        logical_id=str(item.get("LogicalResourceId", "")),
                        resource_type=str(item.get("ResourceType", "")),
                        status=str(item.get("StackResourceDriftStatus", "")),
                        differences=[
                            f"{d.get('PropertyPath', '?')} {d.get('DifferenceType', '?')}"
                            for d in item.get("PropertyDifferences", [])
                        ],
                        physical_id=item.get("PhysicalResourceId"),
                    )
                )
        return DriftReport(stack_name, status, drifted, str(got.get("DetectionStatusReason") or ""))

    # -- internals ---------------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> Any:
        try:
            return getattr(self.cf, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "Unknown")), str(error.get("Message", ""))
            raise CloudFormationError(
                f"CloudFormation {operation} failed: {code}: {message}",
                operation=operation,
                code=code,
                aws_message=message,
            ) from None
        except BotoCoreError as exc:  # no credentials, no endpoint, bad parameters
            raise CloudFormationError(
                f"CloudFormation {operation} failed: {type(exc).__name__}: {exc}",
                operation=operation,
                code=type(exc).__name__,
            ) from None

    def _pages(self, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._call(operation, **params, **({"NextToken": token} if token else {}))
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    def _stack(self, stack_name: str) -> dict[str, Any] | None:
        """The stack's description; None when CloudFormation knows no such (live) stack."""
        try:
            got = self._call("describe_stacks", StackName=stack_name)
        except CloudFormationError as exc:
            if _not_found(exc):
                return None
            raise
        stacks = got.get("Stacks", [])
        return dict(stacks[0]) if stacks else None

    def _find_change_set(self, stack_name: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._call(
                "describe_change_set", ChangeSetName=name, StackName=stack_name
            )
        except CloudFormationError as exc:
            if _not_found(exc):
                return None
            raise
        return found

    def _wait_change_set(
        self,
        stack_name: str,
        name: str,
        kind: ChangeSetType,
        page: dict[str, Any] | None,
        progress: Callable[[str], None] | None,
    ) -> ChangeSet:
        what = f"change set {name} of stack {stack_name}"
        wait, last = _Wait(self), ""
        while True:
            if page is None:
                page = self._call("describe_change_set", ChangeSetName=name, StackName=stack_name)
            status = str(page.get("Status", ""))
            if status != last and progress is not None:
                progress(f"{what}: {status}")
            last = status
            if status == "CREATE_COMPLETE":
                changes = [_resource_change(c) for c in page.get("Changes", [])]
                token = page.get("NextToken")
                while token:
                    more = self._call(
                        "describe_change_set", ChangeSetName=name, StackName=stack_name, NextToken=token
                    )
                    changes.extend(_resource_change(c) for c in more.get("Changes", []))
                    token = more.get("NextToken")
                return ChangeSet(
                    stack_name,
                    name,
                    str(page.get("ChangeSetId", "")),
                    kind,
                    empty=False,
                    changes=changes,
                    execution_status=str(page.get("ExecutionStatus", "AVAILABLE")),
                )
            if status == "FAILED":
                reason = str(page.get("StatusReason", ""))
                if _is_empty_reason(reason):
                    self.delete_change_set(stack_name, name)
                    return ChangeSet(
                        stack_name,
                        name,
                        str(page.get("ChangeSetId", "")),
                        kind,
                        empty=True,
                        changes=[],
                        execution_status=str(page.get("ExecutionStatus", "UNAVAILABLE")),
                    )
                raise ChangeSetFailedError(f"{what} FAILED: {reason or 'no reason given'}")
            if status.startswith("DELETE_"):
                raise CloudFormationError(f"{what} is being deleted ({status})")
            wait.sleep_or_raise(what, status or "unknown")
            page = None

    def _wait_stack(self, stack_name: str, progress: Callable[[str], None] | None) -> StackResult:
        wait, last = _Wait(self), ""
        while True:
            stack = self._stack(stack_name)
            if stack is None:
                raise StackFailedError(
                    f"stack {stack_name} no longer exists (last status {last or 'unknown'}): its "
                    "creation failed and it was deleted",
                    stack_name=stack_name,
                    status="DELETE_COMPLETE",
                    reasons=[],
                )
            status = str(stack.get("StackStatus", ""))
            if status != last and progress is not None:
                progress(f"stack {stack_name}: {status}")
            last = status
            if status.endswith("_IN_PROGRESS"):
                wait.sleep_or_raise(f"stack {stack_name}", status)
                continue
            if status in _SUCCESS:
                return _result(stack, executed=True)
            reasons = self._failure_reasons(stack_name)
            stack_reason = str(stack.get("StackStatusReason") or "")
            message = f"stack {stack_name} ended {status}"
            if stack_reason:
                message += f": {stack_reason}"
            if reasons:
                message += "; failed: " + "; ".join(reasons)
            if status in _UNUSABLE:
                message += f" ({_UNUSABLE[status]})"
            raise StackFailedError(message, stack_name=stack_name, status=status, reasons=reasons)

    def _failure_reasons(self, stack_name: str) -> list[str]:
        """The failed resources of the stack's latest operation, oldest first."""
        failed: list[dict[str, Any]] = []
        token: str | None = None
        try:
            for _ in range(_MAX_EVENT_PAGES):
                page = self._call(
                    "describe_stack_events", StackName=stack_name, **({"NextToken": token} if token else {})
                )
                started = False
                for event in page.get("StackEvents", []):  # newest first
                    status = str(event.get("ResourceStatus", ""))
                    if event.get("LogicalResourceId") == stack_name:
                        if (
                            status in _START_STATUSES
                            and event.get("ResourceStatusReason") == "User Initiated"
                        ):
                            started = True
                            break
                        continue  # the stack's own events: its status reason says as much
                    if status.endswith("_FAILED"):
                        failed.append(event)
                token = page.get("NextToken")
                if started or not token:
                    break
        except CloudFormationError as exc:
            return [f"(stack events unavailable: {exc})"]
        failed.reverse()
        causes = [e for e in failed if "cancelled" not in str(e.get("ResourceStatusReason", "")).lower()]
        return [
            f"{e.get('LogicalResourceId')} ({e.get('ResourceType')}) {e.get('ResourceStatus')}: "
            f"{e.get('ResourceStatusReason') or 'no reason given'}"
            for e in (causes or failed)[:_MAX_REASONS]
        ]


def _not_found(exc: CloudFormationError) -> bool:
    """Whether AWS answered that the stack or change set does not exist."""
    return exc.code in ("ChangeSetNotFound", "ChangeSetNotFoundException") or (
        exc.code == "ValidationError" and "does not exist" in exc.aws_message
    )


def _result(stack: Mapping[str, Any], *, executed: bool) -> StackResult:
    return StackResult(
        stack_name=str(stack.get("StackName", "")),
        status=str(stack.get("StackStatus", "")),
        executed=executed,
        stack_id=str(stack.get("StackId", "")),
        status_reason=str(stack.get("StackStatusReason") or ""),
        outputs={
            str(o["OutputKey"]): str(o.get("OutputValue", ""))
            for o in stack.get("Outputs", [])
            if "OutputKey" in o
        },
    )
