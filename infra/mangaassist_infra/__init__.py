"""MangaAssist's CDK app (CD-02): one Stage per environment, seven stacks in each, all built from
``infra/resources.toml`` and ``infra/environments.toml`` (read by ``mangaassist.core.resources``).

``stage.EnvironmentStage`` wires the stacks; each stack has its module (network, data, compute, ml,
edge, config, monitoring); ``nag`` holds the AwsSolutions checks and the one way to acknowledge a
finding.
"""

from mangaassist_infra.nag import Acknowledged, InfraApp, acknowledge
from mangaassist_infra.stage import STACKS, EnvironmentStage

__all__ = ["STACKS", "Acknowledged", "EnvironmentStage", "InfraApp", "acknowledge"]
