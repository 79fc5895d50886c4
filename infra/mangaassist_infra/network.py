"""network: the stage's VPC (public and private subnets over the environment's availability zones),
its NAT gateways (one in dev, one per zone elsewhere) and its flow logs."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from mangaassist_infra.common import InfraStack, StageSettings

CIDR = "10.0.0.0/16"
"""Every environment is its own account, so they may share the range."""
ZONE_LETTERS = "abc"


class NetworkStack(InfraStack):
    def __init__(self, scope: Construct, settings: StageSettings) -> None:
        super().__init__(scope, "network", settings, "VPC, subnets, NAT gateways, flow logs")
        env = settings.environment
        zones = [f"{env.region}{letter}" for letter in ZONE_LETTERS[: env.availability_zones]]
        flow_logs = self.log_group("FlowLogs", "vpc-flow-logs")
        self.cidr = CIDR
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            vpc_name=settings.physical_name("vpc"),
            ip_addresses=ec2.IpAddresses.cidr(CIDR),
            # explicit zones: synthesizing needs no account lookup (offline, no credentials)
            availability_zones=zones,
            nat_gateways=1 if settings.name == "dev" else len(zones),
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
            # Security Hub's EC2.2: the default security group gets no rules. (CDK does it with a
            # custom resource; its handler's findings are acknowledged in stage.py.)
            restrict_default_security_group=True,
        )

    def private_subnets(self, count: int) -> ec2.SubnetSelection:
        """The first ``count`` private subnets, one per zone."""
        return ec2.SubnetSelection(subnets=self.vpc.private_subnets[:count])
