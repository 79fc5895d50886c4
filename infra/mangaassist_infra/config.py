"""config: the chatbot's AppConfig application, the stage's AppConfig environment, one hosted
configuration profile per declared profile (its first version is the repository's file), and the
deployment strategy CD-06 deploys with: linear, 20% a minute, then five minutes' bake."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_appconfig as appconfig
from constructs import Construct

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import Declaration
from mangaassist_infra.common import InfraStack, StageSettings

APPLICATION = "chatbot"
CONTENT_TYPES = {".yaml": "application/x-yaml", ".yml": "application/x-yaml", ".json": "application/json"}


def check_profile_files(declaration: Declaration, root: Path, resources: Path) -> None:
    """Every declared profile's file exists (its content is the profile's first version)."""
    for name, profile in declaration.config_profiles.items():
        if not (root / profile.path).is_file():
            raise ConfigError(
                f"{resources}: config_profiles.{name}.path: {profile.path} is not a file under {root}"
            )


class ConfigStack(InfraStack):
    def __init__(self, scope: Construct, settings: StageSettings) -> None:
        super().__init__(scope, "config", settings, "AppConfig: application, environment, profiles")
        self.application = appconfig.Application(
            self,
            "Application",
            application_name=settings.physical_name(APPLICATION),
            description="The chatbot's run-time configuration (CD-06)",
        )
        self.app_environment = appconfig.Environment(
            self,
            "Environment",
            application=self.application,
            environment_name=settings.name,
            description=f"The chatbot's {settings.name} tasks",
        )
        self.strategy = appconfig.DeploymentStrategy(
            self,
            "Linear20PercentEveryMinute",
            deployment_strategy_name=settings.physical_name("linear-20-every-minute"),
            description="20% of targets a minute (5 minutes), then 5 minutes' bake watching alarms",
            rollout_strategy=appconfig.RolloutStrategy.linear(
                growth_factor=20,
                deployment_duration=cdk.Duration.minutes(5),
                final_bake_time=cdk.Duration.minutes(5),
            ),
        )
        self.profiles: dict[str, appconfig.HostedConfiguration] = {}
        for name, profile in settings.declaration.config_profiles.items():
            path = settings.root / profile.path
            self.profiles[name] = appconfig.HostedConfiguration(
                self,
                f"{name.title()}Profile",
                application=self.application,
                name=name,
                description=profile.description,
                type=appconfig.ConfigurationType.FREEFORM,
                content=appconfig.ConfigurationContent.from_file(
                    str(path), CONTENT_TYPES.get(path.suffix, "text/plain")
                ),
                deployment_strategy=self.strategy,
            )
