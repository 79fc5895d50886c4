"""compute: the chatbot on ECS Fargate behind an ALB with two target groups (blue/green, the
listener forwards weighted 100/0 so a deploy shifts traffic by weights), its autoscaling, the
Lambda burst path with its ``live`` alias, and the chatbot's image repository
``mangaassist-ENV-chatbot`` (CD-01's ``image`` job pushes the commit's image there; the tasks'
execution role pulls from it). The tasks' role names what it may call by physical name (tables and
their indexes, the search domain, the model endpoint): no cross-stack reference."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.data import SEARCH_DOMAIN, DataStack
from mangaassist_infra.nag import acknowledge, cfn
from mangaassist_infra.network import NetworkStack

SERVICE = "chatbot"
IMAGE = "public.ecr.aws/mangaassist/chatbot:latest"
"""The stack's own service's placeholder: CD-01's revisions run the image its ``image`` job pushed to
REPOSITORY (``ECS_IMAGE``, by digest), each in an ECS service of its own (EcsServiceCompute)."""
REPOSITORY = SERVICE
"""The chatbot's image repository: ``mangaassist-ENV-chatbot``, one per environment (account)."""
IMAGES_KEPT = 50
"""The lifecycle rule keeps the newest 50 images: every revision a rollback could go back to (one
image per commit that changed CD-01's paths), the older ones expire."""
LISTENER_PORT = 80
BURST_HANDLER = '''\
import json


def handler(event, context):
    """The burst path's placeholder: the chatbot's Lambda build replaces it (CD-01)."""
    return {
        "statusCode": 503,
        "headers": {"Content-Type": "application/json", "Retry-After": "5"},
        "body": json.dumps({"error": "the burst path is not deployed yet"}),
    }
'''
TABLE_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
]


class ComputeStack(InfraStack):
    def __init__(
        self, scope: Construct, settings: StageSettings, network: NetworkStack, data: DataStack
    ) -> None:
        super().__init__(scope, "compute", settings, "the chatbot: ECS Fargate, ALB, Lambda burst path")
        self.add_stack_dependency(network, "the service and the ALB live in the VPC")
        self.add_stack_dependency(data, "the ALB logs to the access-logs bucket; the tasks use the tables")
        env = settings.environment
        declared = settings.declaration.services[SERVICE]
        vpc = network.vpc

        # --- the image repository (CD-01's image job pushes, the tasks pull) ----------------
        self.image_key = kms.Key(
            self,
            "ImageKey",
            alias=f"alias/{settings.physical_name(f'{REPOSITORY}-images')}",
            description="Encrypts the chatbot's images in ECR",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.repository = ecr.Repository(
            self,
            "ChatbotRepository",
            repository_name=settings.physical_name(REPOSITORY),
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            image_scan_on_push=True,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=self.image_key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"keep the newest {IMAGES_KEPT} images",
                    max_image_count=IMAGES_KEPT,
                )
            ],
        )
        cdk.CfnOutput(
            self,
            "ChatbotRepositoryUri",
            value=self.repository.repository_uri,
            description="The chatbot's images (CD-01's image job pushes the commit's, tagged by its SHA)",
            export_name=settings.physical_name(f"{REPOSITORY}-repository-uri"),
        )

        # --- the service ------------------------------------------------------------------
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=settings.physical_name(SERVICE),
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        task = ecs.FargateTaskDefinition(
            self,
            "Task",
            family=settings.physical_name(SERVICE),
            cpu=env.task_cpu,
            memory_limit_mib=env.task_memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.X86_64,
            ),
        )
        for statement in self._task_access():
            task.add_to_task_role_policy(statement)
        self._allow_pull(task.obtain_execution_role())
        if settings.declaration.vector_indexes:
            acknowledge(
                cfn(task.task_role.node.find_child("DefaultPolicy")),
                f"AwsSolutions-IAM5[Resource::{self.resolve(self._search_paths())}]",
                "OpenSearch authorizes HTTP calls by path under the domain; the chatbot queries the "
                "vector indexes and their aliases (kb-live, CD-04) of its own stage's domain only.",
            )
        task.add_container(
            SERVICE,
            image=ecs.ContainerImage.from_registry(IMAGE),
            port_mappings=[ecs.PortMapping(container_port=declared.port)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=SERVICE, log_group=self.log_group("ChatbotLogs", SERVICE)
            ),
            environment={
                "MANGAASSIST_ENV": settings.name,
                "MANGAASSIST_PORT": str(declared.port),
            },
        )
        acknowledge(
            cfn(task),
            "AwsSolutions-ECS2",
            "The two environment variables are the environment's name and the port, neither a "
            "secret; table and profile names derive from them (mangaassist-ENV-NAME).",
        )

        self.alb_security_group = ec2.SecurityGroup(
            self,
            "AlbSecurityGroup",
            vpc=vpc,
            description="The chatbot ALB: its listener port, from anywhere",
            allow_all_outbound=False,
        )
        self.alb_security_group.add_ingress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(LISTENER_PORT), "the chat API's public listener"
        )
        acknowledge(
            cfn(self.alb_security_group),
            "AwsSolutions-EC23",
            "Internet-facing by design: the ALB is the chat API's public entry (API Gateway "
            "proxies to it too). Only the listener port is open; tasks admit only this group.",
        )
        self.alb = elbv2.ApplicationLoadBalancer(
            self,
            "Alb",
            vpc=vpc,
            internet_facing=True,
            load_balancer_name=settings.physical_name(SERVICE),
            security_group=self.alb_security_group,
            drop_invalid_header_fields=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
        )
        self.alb.log_access_logs(data.access_logs, prefix="alb")

        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=task,
            service_name=settings.physical_name(SERVICE),
            desired_count=env.chatbot_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            assign_public_ip=False,
        )
        self.service.connections.allow_from(
            self.alb_security_group, ec2.Port.tcp(declared.port), "the ALB to the tasks"
        )
        self.alb_security_group.add_egress_rule(
            ec2.Peer.ipv4(network.cidr), ec2.Port.tcp(declared.port), "the ALB to the tasks"
        )

        self.target_groups = {
            color: elbv2.ApplicationTargetGroup(
                self,
                f"{color.title()}TargetGroup",
                vpc=vpc,
                port=declared.port,
                protocol=elbv2.ApplicationProtocol.HTTP,
                target_type=elbv2.TargetType.IP,
                deregistration_delay=cdk.Duration.seconds(30),
                health_check=elbv2.HealthCheck(
                    path=declared.health_path, healthy_http_codes="200", interval=cdk.Duration.seconds(15)
                ),
            )
            for color in ("blue", "green")
        }
        # The running revision registers in blue; a deploy brings the next one up in green and
        # shifts the listener's weights (CD-01), then the two swap roles.
        self.service.attach_to_application_target_group(self.target_groups["blue"])
        self.listener = self.alb.add_listener(
            "Listener",
            port=LISTENER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            open=False,
            default_action=elbv2.ListenerAction.weighted_forward(
                [
                    elbv2.WeightedTargetGroup(target_group=self.target_groups["blue"], weight=100),
                    elbv2.WeightedTargetGroup(target_group=self.target_groups["green"], weight=0),
                ]
            ),
        )
        for color, group in self.target_groups.items():
            cdk.CfnOutput(
                self,
                f"{color.title()}TargetGroupArn",
                value=group.target_group_arn,
                description=f"The {color} target group (weights are shifted by the deploy, CD-01)",
            )
        cdk.CfnOutput(self, "ListenerArn", value=self.listener.listener_arn)
        scaling = self.service.auto_scale_task_count(
            min_capacity=env.chatbot_tasks, max_capacity=env.chatbot_max_tasks
        )
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=60,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )

        # --- the burst path -----------------------------------------------------------------
        burst_logs = self.log_group("BurstLogs", f"{SERVICE}-burst")
        burst_role = iam.Role(
            self,
            "BurstRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="The chatbot's burst Lambda: writes its own log group",
        )
        burst_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[burst_logs.log_group_arn],
            )
        )
        self.burst = lambda_.Function(
            self,
            "Burst",
            function_name=settings.physical_name(f"{SERVICE}-burst"),
            description="The chatbot's burst path (placeholder until CD-01 deploys the build)",
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            handler="index.handler",
            code=lambda_.Code.from_inline(BURST_HANDLER),
            memory_size=env.burst_lambda_memory_mib,
            timeout=cdk.Duration.seconds(29),
            role=burst_role,
            log_group=burst_logs,
        )
        self.burst_live = lambda_.Alias(
            self, "BurstLive", alias_name="live", version=self.burst.current_version
        )

    def _allow_pull(self, role: iam.IRole) -> None:
        """The tasks' execution role (``task_execution_role_arn``, which EcsServiceCompute's task
        definitions use too) pulls the chatbot's images: the repository's layers, the key through
        ECR only, and the registry's token (no resource-level permission)."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[self.repository.repository_arn],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[self.image_key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"ecr.{self.region}.amazonaws.com"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
        assert isinstance(role, iam.Role)
        acknowledge(
            cfn(role.node.find_child("DefaultPolicy")),
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permission (IAM's service "
            "authorization reference); the pulls themselves name the chatbot's repository only.",
        )

    def _task_access(self) -> list[iam.PolicyStatement]:
        """What the chatbot's tasks call, by physical name (no cross-stack reference): items of
        the declared tables and their indexes, the search domain's indexes, the model endpoints."""
        settings = self.settings
        tables: list[str] = []
        for name, declared in settings.declaration.tables.items():
            table = self.format_arn(
                service="dynamodb", resource="table", resource_name=settings.physical_name(name)
            )
            tables += [table, *(f"{table}/index/{index.name}" for index in declared.indexes)]
        statements = [iam.PolicyStatement(actions=TABLE_ACTIONS, resources=tables)]
        if settings.declaration.vector_indexes:
            statements.append(
                iam.PolicyStatement(
                    actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"],
                    resources=[self._search_paths()],
                )
            )
        if settings.declaration.model_endpoints:
            endpoints = [
                self.format_arn(
                    service="sagemaker", resource="endpoint", resource_name=settings.physical_name(name)
                )
                for name in settings.declaration.model_endpoints
            ]
            statements.append(iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=endpoints))
        return statements

    def _search_paths(self) -> str:
        """Every path (index, alias) under the stage's search domain."""
        domain = self.settings.physical_name(SEARCH_DOMAIN)
        return self.format_arn(service="es", resource="domain", resource_name=f"{domain}/*")
