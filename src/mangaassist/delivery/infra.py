"""CD-02's decisions, pure: what the declaration asks of a provider, what changes, what is destructive.

* ``specs``: the declaration (``core.resources``) as one ``ResourceSpec`` per resource, the input
  of a ``Provisioner`` (the local platform's).
* ``plan``: those specs against what the provider has (``Provisioner.current``): create, update or
  unchanged each, and drift (a resource the provider provisioned that has gone or changed since).
* ``classify``: two sets of CloudFormation templates (the ones last deployed to an environment and
  the ones just synthesized) as one ``TemplateChange`` per resource: add, modify in place, replace or
  delete. A property change needs a replacement when the resource type's registry schema lists it
  as create-only (the schemas cfn-lint ships, for every resource type) or when CloudFormation's
  documentation says so where the registry schema is silent (``_REPLACES``). A replacement or a
  deletion of a stateful resource (``STATEFUL_TYPES``) is destructive.
* ``template_findings``: what every template must hold beyond cdk-nag (retention, deletion
  protection, point-in-time recovery, versioned encrypted buckets, the three tags, no wildcard IAM
  action): the assertions gate, checked on what will be applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cache
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import STATEFUL_TYPES, Declaration
from mangaassist.platform.infra import Present, ResourceSpec

TAGS: tuple[str, ...] = ("environment", "pipeline", "owner")

_REPLACES: dict[str, frozenset[str]] = {
    # CloudFormation's documentation ("Update requires: Replacement") where the registry schema does
    # not list the property as create-only
    "AWS::DynamoDB::Table": frozenset({"KeySchema", "LocalSecondaryIndexes"}),
}


# -- the local provider's plan ---------------------------------------------------------------------


def specs(declaration: Declaration) -> list[ResourceSpec]:
    """Every declared resource as a provider's spec, in declaration order, kinds in a fixed order."""
    out = []
    for kind, items in declaration.kinds().items():
        for name, item in items.items():
            properties = item.model_dump(mode="json", exclude={"description"})
            out.append(ResourceSpec(kind, name, properties))
    return out


class Action(Enum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class PlannedChange:
    kind: str
    name: str
    action: Action
    drift: str | None
    """Why this is drift (provisioned by CD-02, gone or changed since), or None."""
    changed: tuple[str, ...] = ()
    """The properties that differ (an update)."""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action.value, "changed": list(self.changed)}


def plan(wanted: list[ResourceSpec], present: Mapping[str, Present]) -> list[PlannedChange]:
    out = []
    for spec in wanted:
        found = present.get(spec.key, Present(None, False))
        if found.properties is None:
            drift = "provisioned by CD-02, deleted since" if found.recorded else None
            out.append(PlannedChange(spec.kind, spec.name, Action.CREATE, drift))
            continue
        changed = tuple(
            sorted(
                k
                for k in set(spec.properties) | set(found.properties)
                if spec.properties.get(k) != found.properties.get(k)
            )
        )
        if not changed:
            out.append(PlannedChange(spec.kind, spec.name, Action.UNCHANGED, None))
            continue
        drift = f"changed outside CD-02: {', '.join(changed)}" if found.recorded else None
        out.append(PlannedChange(spec.kind, spec.name, Action.UPDATE, drift, changed))
    return out


# -- CloudFormation templates ----------------------------------------------------------------------


class ChangeKind(Enum):
    ADD = "add"
    MODIFY = "modify"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class TemplateChange:
    stack: str
    logical_id: str
    resource_type: str
    kind: ChangeKind
    properties: tuple[str, ...] = ()
    """The changed properties (modify, replace); for a replacement, the ones that force it first."""
    stateful: bool = False

    @property
    def destructive(self) -> bool:
        return self.stateful and self.kind in (ChangeKind.REPLACE, ChangeKind.DELETE)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "logical_id": self.logical_id,
            "type": self.resource_type,
            "change": self.kind.value,
            "properties": list(self.properties),
            "stateful": self.stateful,
            "destructive": self.destructive,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemplateChange:
        """The change back from ``as_dict`` (a step's recorded output)."""
        return cls(
            data["stack"],
            data["logical_id"],
            data["type"],
            ChangeKind(data["change"]),
            tuple(data["properties"]),
            bool(data["stateful"]),
        )

    def line(self) -> str:
        props = f" ({', '.join(self.properties)})" if self.properties else ""
        flag = "  DESTRUCTIVE" if self.destructive else ""
        return f"{self.kind.value:<8} {self.stack}/{self.logical_id} {self.resource_type}{props}{flag}"


@cache
def create_only(resource_type: str) -> frozenset[str]:
    """Top-level properties whose change replaces a resource of ``resource_type``."""
    try:
        from cfnlint.schema import PROVIDER_SCHEMA_MANAGER, ResourceNotFoundError
    except ImportError as exc:  # the infra extra is missing
        raise ConfigError(
            "classifying CloudFormation changes needs cfn-lint: pip install -e '.[infra]'"
        ) from exc
    try:
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    except ResourceNotFoundError:
        return _REPLACES.get(resource_type, frozenset())
    paths = schema.get("createOnlyProperties", [])
    names = {p.split("/")[2] for p in paths if p.startswith("/properties/")}
    return frozenset(names) | _REPLACES.get(resource_type, frozenset())


def _resources(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    resources = template.get("Resources", {})
    if not isinstance(resources, dict):
        raise ConfigError("a template's Resources is not a mapping")
    return {str(k): dict(v) for k, v in resources.items()}


def classify(
    old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> list[TemplateChange]:
    """Every resource change between two sets of templates (stack name -> template). A stack that
    is gone deletes all its resources; a new one adds them."""
    out: list[TemplateChange] = []
    for stack in sorted(set(old) | set(new)):
        before = _resources(old.get(stack, {}))
        after = _resources(new.get(stack, {}))
        for logical_id in sorted(set(before) | set(after)):
            a, b = before.get(logical_id), after.get(logical_id)
            rtype = str((b or a or {}).get("Type", "?"))
            stateful = rtype in STATEFUL_TYPES
            if a is None:
                out.append(TemplateChange(stack, logical_id, rtype, ChangeKind.ADD, stateful=stateful))
                continue
            if b is None:
                out.append(TemplateChange(stack, logical_id, rtype, ChangeKind.DELETE, stateful=stateful))
                continue
            if a.get("Type") != b.get("Type"):
                out.append(TemplateChange(stack, logical_id, rtype, ChangeKind.REPLACE, ("Type",), stateful))
                continue
            pa, pb = a.get("Properties", {}) or {}, b.get("Properties", {}) or {}
            changed = sorted(k for k in set(pa) | set(pb) if _canon(pa.get(k)) != _canon(pb.get(k)))
            others = [
                k for k in a if k not in ("Properties", "Metadata") and _canon(a[k]) != _canon(b.get(k))
            ]
            others += [k for k in b if k not in a and k not in ("Properties", "Metadata")]
            if not changed and not others:
                continue
            forcing = [k for k in changed if k in create_only(rtype)]
            if forcing:
                rest = [k for k in changed if k not in forcing]
                out.append(
                    TemplateChange(stack, logical_id, rtype, ChangeKind.REPLACE, (*forcing, *rest), stateful)
                )
            else:
                out.append(
                    TemplateChange(
                        stack,
                        logical_id,
                        rtype,
                        ChangeKind.MODIFY,
                        (*changed, *sorted(set(others))),
                        stateful,
                    )
                )
    return out


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# -- what every template must hold -----------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    stack: str
    logical_id: str
    rule: str
    message: str

    def line(self) -> str:
        return f"{self.stack}/{self.logical_id}: {self.rule}: {self.message}"


def _tags(props: Mapping[str, Any]) -> set[str]:
    tags = props.get("Tags")
    if isinstance(tags, list):
        return {str(t.get("Key")) for t in tags if isinstance(t, dict)}
    if isinstance(tags, dict):
        return {str(k) for k in tags}
    return set()


def _statements(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    docs = [props.get("PolicyDocument")] + [p.get("PolicyDocument") for p in props.get("Policies", []) or []]
    for doc in docs:
        if isinstance(doc, dict):
            stmts = doc.get("Statement", [])
            out += [s for s in (stmts if isinstance(stmts, list) else [stmts]) if isinstance(s, dict)]
    return out


def _wildcard(action: Any) -> bool:
    actions = action if isinstance(action, list) else [action]
    return any(isinstance(a, str) and (a == "*" or a.endswith(":*")) for a in actions)


def _resource_findings(rtype: str, res: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(rule, message) for one resource, IAM wildcards aside."""
    props = res.get("Properties", {}) or {}
    out = []
    if (
        rtype in STATEFUL_TYPES
        and rtype != "AWS::KMS::Key"
        and (res.get("DeletionPolicy") != "Retain" or res.get("UpdateReplacePolicy") != "Retain")
    ):
        out.append(("retain", "stateful resource not retained on delete and replace"))
    if rtype == "AWS::DynamoDB::Table":
        if props.get("DeletionProtectionEnabled") is not True:
            out.append(("deletion-protection", "table without deletion protection"))
        pitr = (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")
        if pitr is not True:
            out.append(("pitr", "table without point-in-time recovery"))
    if rtype == "AWS::S3::Bucket":
        if (props.get("VersioningConfiguration") or {}).get("Status") != "Enabled":
            out.append(("versioning", "bucket not versioned"))
        if not props.get("BucketEncryption"):
            out.append(("encryption", "bucket not encrypted"))
    if "Tags" in props or rtype in STATEFUL_TYPES:
        missing = [t for t in TAGS if t not in _tags(props)]
        if missing:
            out.append(("tags", f"missing tag(s) {', '.join(missing)}"))
    return out


def template_findings(
    templates: Mapping[str, Mapping[str, Any]], acknowledged_wildcards: frozenset[str] = frozenset()
) -> list[Finding]:
    """What the templates break of the rules every stateful resource and policy must follow.

    ``acknowledged_wildcards``: ``stack/logical_id`` of policies whose wildcard action has an
    acknowledgment with a reason (cdk-nag's IAM5, recorded in the resource's metadata)."""
    out: list[Finding] = []
    for stack, template in sorted(templates.items()):
        for logical_id, res in sorted(_resources(template).items()):
            rtype = str(res.get("Type"))
            out += [Finding(stack, logical_id, r, m) for r, m in _resource_findings(rtype, res)]
            if rtype not in ("AWS::IAM::Policy", "AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
                continue
            if f"{stack}/{logical_id}" in acknowledged_wildcards:
                continue
            for stmt in _statements(res.get("Properties", {}) or {}):
                if stmt.get("Effect") == "Allow" and _wildcard(stmt.get("Action")):
                    action = stmt.get("Action")
                    out.append(
                        Finding(
                            stack,
                            logical_id,
                            "iam-wildcard",
                            f"wildcard action {action!r} without an acknowledgment",
                        )
                    )
    return out
