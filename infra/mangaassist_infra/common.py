"""What every stack of a stage shares: the stage's settings and a base Stack that names itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from mangaassist.core.resources import Declaration, Environment, physical_name

PIPELINE = "CD-02"

RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
"""environments.toml's log_retention_days (validated to these values) as CloudWatch's enum."""


@dataclass(frozen=True)
class StageSettings:
    """One environment's view of the declaration: its name, its settings, the repository root
    (config profiles' files are read from it)."""

    name: str
    environment: Environment
    declaration: Declaration
    root: Path

    def physical_name(self, name: str) -> str:
        return physical_name(self.name, name)

    @property
    def retention(self) -> logs.RetentionDays:
        return RETENTION[self.environment.log_retention_days]

    @property
    def is_prod(self) -> bool:
        return self.name == "prod"


class InfraStack(cdk.Stack):
    """A stack of a stage, named ``mangaassist-ENV-KIND`` in CloudFormation."""

    def __init__(self, scope: Construct, kind: str, settings: StageSettings, description: str) -> None:
        super().__init__(
            scope,
            kind,
            stack_name=settings.physical_name(kind),
            description=f"MangaAssist {settings.name}: {description} (CD-02, infra/mangaassist_infra)",
            termination_protection=settings.is_prod,
        )
        self.settings = settings

    def log_group(self, id: str, name: str) -> logs.LogGroup:
        """A log group with the environment's retention, kept when its stack goes."""
        return logs.LogGroup(
            self,
            id,
            log_group_name=f"/mangaassist/{self.settings.name}/{name}",
            retention=self.settings.retention,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
