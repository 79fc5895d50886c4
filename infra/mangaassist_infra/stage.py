"""One Stage per environment: its seven stacks, wired by passing constructs (never across stages),
and the tags on everything in it."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from mangaassist.core.resources import Declaration, Environment
from mangaassist_infra.common import PIPELINE, StageSettings
from mangaassist_infra.compute import ComputeStack
from mangaassist_infra.config import ConfigStack
from mangaassist_infra.data import DataStack
from mangaassist_infra.edge import EdgeStack
from mangaassist_infra.ml import MlStack
from mangaassist_infra.monitoring import MonitoringStack
from mangaassist_infra.nag import write_acknowledgments_to_templates
from mangaassist_infra.network import NetworkStack

STACKS = ("network", "data", "compute", "ml", "edge", "config", "monitoring")


class EnvironmentStage(cdk.Stage):
    def __init__(
        self,
        scope: Construct,
        name: str,
        *,
        environment: Environment,
        declaration: Declaration,
        root: Path,
    ) -> None:
        super().__init__(
            scope, name, env=cdk.Environment(account=environment.account, region=environment.region)
        )
        settings = StageSettings(name=name, environment=environment, declaration=declaration, root=root)
        network = NetworkStack(self, settings)
        data = DataStack(self, settings, network)
        compute = ComputeStack(self, settings, network, data)
        ml = MlStack(self, settings, data)
        edge = EdgeStack(self, settings, data, compute)
        config = ConfigStack(self, settings)
        monitoring = MonitoringStack(self, settings, data, compute, ml)
        self.stacks: dict[str, cdk.Stack] = {
            "network": network,
            "data": data,
            "compute": compute,
            "ml": ml,
            "edge": edge,
            "config": config,
            "monitoring": monitoring,
        }
        for key, value in {"environment": name, "pipeline": PIPELINE, "owner": environment.owner}.items():
            cdk.Tags.of(self).add(key, value)
        write_acknowledgments_to_templates(self)
