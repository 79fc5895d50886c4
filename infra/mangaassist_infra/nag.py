"""cdk-nag's AwsSolutions checks, and the one way to acknowledge a finding.

A finding is either fixed or acknowledged here, in code, on the construct it is about, with a reason
that says why (``acknowledge``). cdk-nag 3 runs as a CDK policy-validation plugin: any finding left
fails ``app.synth()``. The acknowledgments are also written into each template's resource Metadata
(``cdk_nag.rules_to_suppress``), so the audit trail travels with the templates, and the app keeps a
ledger of them (``InfraApp.acknowledged``) for its summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, WriteNagSuppressionsToCloudFormationAspect
from constructs import IConstruct

if TYPE_CHECKING:
    from mangaassist_infra.stage import EnvironmentStage

MIN_REASON = 40
"""A reason is a sentence about this resource, not a shrug."""


@dataclass(frozen=True)
class Acknowledged:
    path: str
    rule: str
    reason: str


class InfraApp(cdk.App):
    """The CDK app, with the AwsSolutions checks registered and a ledger of acknowledgments."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acknowledged: list[Acknowledged] = []
        self.stages: dict[str, EnvironmentStage] = {}
        cdk.Validations.of(self).add_plugins(AwsSolutionsChecks(self))


def write_acknowledgments_to_templates(stage: cdk.Stage) -> None:
    """Aspects stop at a Stage's boundary, so each stage registers the metadata writer itself."""
    cdk.Aspects.of(stage).add(WriteNagSuppressionsToCloudFormationAspect())


def cfn(construct: IConstruct) -> cdk.CfnResource:
    """The CloudFormation resource behind a higher-level construct (its default child)."""
    child = construct.node.default_child
    if not isinstance(child, cdk.CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource of its own")
    return child


def acknowledge(resource: cdk.CfnResource, rule: str, reason: str) -> None:
    """Acknowledge one AwsSolutions finding (``AwsSolutions-IAM5[Resource::*]``) on one
    CloudFormation resource (``cfn(construct)``): never a stack, never a rule family at large."""
    if not rule.startswith("AwsSolutions-"):
        raise ValueError(f"{rule!r}: acknowledge AwsSolutions findings by their rule id")
    if len(reason) < MIN_REASON:
        raise ValueError(f"{rule} on {resource.node.path}: say why, in a sentence ({reason!r})")
    cdk.Validations.of(resource).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
    root = resource.node.root
    if isinstance(root, InfraApp):
        root.acknowledged.append(Acknowledged(resource.node.path, rule, reason))
