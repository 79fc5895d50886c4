"""compute: the place CD-01 runs the chatbot in, not the chatbot itself (issue 18). The ECS cluster,
the ALB with its listener (port 80; its default action a 503 JSON answer until CD-01's first deploy:
``EcsServiceCompute`` makes each revision's ECS service, target group and pin rule and the service's
weighted rule, which come before the default), the tasks' security group, execution role, task role
and log group, and the outputs ``[environments.ENV.aws]`` copies (``mangaassist-ENV-chatbot-KEY``).
And the environment's Amazon Managed Prometheus workspace ``mangaassist-ENV-chatbot``, where the
workers' request series go: the collector ``EcsServiceCompute`` adds to each task with
``amp_remote_write_url`` (the output ``AmpRemoteWriteUrl``) writes them there, the task role may
remote-write to that workspace only, and CD-01's judges read it with ``metrics = "amp"`` and
``amp_workspace_url`` (``AmpWorkspaceUrl``).

Also the place of the Lambda burst path, not its function: the function
``mangaassist-ENV-chatbot-burst`` (``burst_function_name``) and its alias ``live`` are CD-01's
(``LambdaAliasCompute`` makes them on the burst service's first deploy, from an image), so here is
what it needs before it exists: its execution role (the log group, the image, what the chatbot
calls, its network interfaces in the VPC), its log group (``/aws/lambda/FUNCTION``, Lambda's
default), its security group and subnets (the tasks' private subnets: it reaches the search domain
as they do) and the image repository's permission for Lambda to pull; the edge and monitoring
stacks name the alias (``burst_alias_arn``).

And the chatbot's image repository ``mangaassist-ENV-chatbot`` (CD-01's ``image`` job pushes the
commit's image there; both execution roles pull from it). No ECS service, target group,
autoscaling or Lambda function here: those are CD-01's. The roles name what the chatbot may call by
physical name (tables and their indexes, the search domain, the model endpoint): no cross-stack
reference."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_aps as aps
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.data import SEARCH_DOMAIN, DataStack
from mangaassist_infra.nag import acknowledge, cfn
from mangaassist_infra.network import NetworkStack

SERVICE = "chatbot"
REPOSITORY = SERVICE
"""The chatbot's image repository: ``mangaassist-ENV-chatbot``, one per environment (account). CD-01's
revisions run the image its ``image`` job pushed there (``ECS_IMAGE``, by digest), each in an ECS
service of its own (EcsServiceCompute)."""
IMAGES_KEPT = 50
"""The lifecycle rule keeps the newest 50 images: every revision a rollback could go back to (one
image per commit that changed CD-01's paths), the older ones expire."""
LISTENER_PORT = 80
NOT_DEPLOYED = "no revision of the chatbot is deployed yet"
"""The listener's default answer (503): what a request gets before CD-01's first deploy."""
BURST_SERVICE = "chatbot-burst"
"""The burst path's service in ``mangaassist.toml`` (``[environments.ENV.services.chatbot-burst]``,
``compute = "lambda"``): with ``lambda_name_prefix = "mangaassist-ENV-"`` (the output
``LambdaNamePrefix``) ``LambdaAliasCompute`` names its function ``mangaassist-ENV-chatbot-burst``,
the name this stage's stacks use."""
BURST_ALIAS = "live"
"""``LambdaAliasCompute``'s default ``lambda_alias``: what the API invokes and the alarm watches."""
BURST_TIMEOUT_S = 29
"""API Gateway waits 29 s for an integration by default: the function need not run longer."""
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


def burst_function_name(settings: StageSettings) -> str:
    """The burst path's function, which CD-01 makes: ``lambda_name_prefix`` + ``BURST_SERVICE``."""
    return settings.physical_name(BURST_SERVICE)


def burst_alias_arn(stack: cdk.Stack, settings: StageSettings) -> str:
    """The ARN of the burst function's alias ``live`` in ``stack``'s account and region, built from
    its name: the function need not exist when CD-02 applies (CD-01 makes it later)."""
    return stack.format_arn(
        service="lambda",
        resource="function",
        resource_name=f"{burst_function_name(settings)}:{BURST_ALIAS}",
        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
    )


class ComputeStack(InfraStack):
    def __init__(
        self, scope: Construct, settings: StageSettings, network: NetworkStack, data: DataStack
    ) -> None:
        super().__init__(
            scope, "compute", settings, "the chatbot's place: ECS cluster, ALB, roles, the burst path's role"
        )
        self.add_stack_dependency(network, "the ALB and the tasks' security group live in the VPC")
        self.add_stack_dependency(data, "the ALB logs to the access-logs bucket; the tasks use the tables")
        env = settings.environment
        declared = settings.declaration.services[SERVICE]
        vpc = network.vpc
        private = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)

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

        # --- the place CD-01's revisions run in (EcsServiceCompute makes the services) ---------
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            cluster_name=settings.physical_name(SERVICE),
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.chatbot_logs = self.log_group("ChatbotLogs", SERVICE)
        # The roles the revisions' task definitions name (EcsServiceCompute registers those).
        # They keep the id of the CDK task definition that made them before (issue 18), so their
        # logical ids, generated names and ARNs, which [environments.ENV.aws] holds, do not change.
        roles = Construct(self, "Task")
        self.execution_role = iam.Role(
            roles,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="The chatbot's ECS tasks: pulls the image, writes the log group",
        )
        self._allow_pull(self.execution_role)
        self.chatbot_logs.grant_write(self.execution_role)
        self.task_role = iam.Role(
            roles,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="The chatbot's ECS tasks: what the chatbot calls (tables, search, model)",
        )
        self._allow_task_access(self.task_role)
        # the workers' request series (the collector in each task writes them; CD-01's judges read)
        self.metrics_workspace = aps.CfnWorkspace(
            self, "MetricsWorkspace", alias=settings.physical_name(SERVICE)
        )
        workspace_url = cdk.Fn.join(
            "",
            [
                f"https://aps-workspaces.{self.region}.{self.url_suffix}/workspaces/",
                self.metrics_workspace.attr_workspace_id,
            ],
        )
        self.task_role.add_to_principal_policy(
            iam.PolicyStatement(actions=["aps:RemoteWrite"], resources=[self.metrics_workspace.attr_arn])
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
        # The revisions' tasks (security_groups): the ALB reaches them on the container port (and
        # may reach nothing else: its egress is to this group only); they call out anywhere, as
        # the CDK service's default group let them (ECR, logs, the tables, search and the model
        # through the NAT gateways and the VPC).
        self.task_security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=vpc,
            description="The chatbot ECS tasks: the container port from the ALB, all outbound",
            allow_all_outbound=True,
        )
        self.task_security_group.connections.allow_from(
            self.alb_security_group, ec2.Port.tcp(declared.port), "the ALB to the tasks"
        )
        # An inline egress rule too: a group created with none keeps EC2's default allow-all egress
        # (CDK writes the group-to-group rule above as a resource of its own, which does not remove it).
        self.alb_security_group.add_egress_rule(
            ec2.Peer.ipv4(network.cidr), ec2.Port.tcp(declared.port), "the ALB to the tasks"
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
        # No revision is deployed yet: a 503 until CD-01's first deploy, whose rules (pins from
        # priority 100, the weighted rule from 40000) come before the default action.
        self.listener = self.alb.add_listener(
            "Listener",
            port=LISTENER_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            open=False,
            default_action=elbv2.ListenerAction.fixed_response(
                503, content_type="application/json", message_body=json.dumps({"error": NOT_DEPLOYED})
            ),
        )
        self._settings_outputs(
            {
                "ClusterName": ("cluster", self.cluster.cluster_name, "the ECS cluster"),
                "ListenerArn": ("listener_arn", self.listener.listener_arn, "the ALB's listener"),
                "VpcId": ("vpc_id", vpc.vpc_id, "the VPC of the revisions' target groups"),
                "PrivateSubnetIds": (
                    "subnets",
                    cdk.Fn.join(",", private.subnet_ids),
                    "the tasks' private subnets, comma-separated",
                ),
                "TaskSecurityGroupId": (
                    "security_groups",
                    self.task_security_group.security_group_id,
                    "the tasks' security group",
                ),
                "TaskExecutionRoleArn": (
                    "task_execution_role_arn",
                    self.execution_role.role_arn,
                    "pulls the image, writes the log group",
                ),
                "TaskRoleArn": ("task_role_arn", self.task_role.role_arn, "what the chatbot may call"),
                "LogGroupName": ("log_group", self.chatbot_logs.log_group_name, "the tasks' logs"),
                "ContainerPort": ("container_port", str(declared.port), "the chatbot's port"),
                "TaskCpu": ("task_cpu", str(env.task_cpu), "the tasks' CPU units"),
                "TaskMemoryMib": ("task_memory_mib", str(env.task_memory_mib), "the tasks' memory"),
                "MaxTasks": (
                    "max_tasks",
                    str(env.chatbot_max_tasks),
                    "the autoscaling maximum of each revision",
                ),
                "AmpWorkspaceUrl": (
                    "amp_workspace_url",
                    workspace_url,
                    "the AMP workspace CD-01's judges query (metrics = amp)",
                ),
                "AmpRemoteWriteUrl": (
                    "amp_remote_write_url",
                    cdk.Fn.join("", [workspace_url, "/api/v1/remote_write"]),
                    "where each task's collector writes the workers' request series",
                ),
            }
        )

        # --- the burst path's place (CD-01's LambdaAliasCompute makes the function and alias) --
        function_name = burst_function_name(settings)
        function_arn = self.format_arn(
            service="lambda",
            resource="function",
            resource_name=function_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.burst_logs = logs.LogGroup(
            self,
            "BurstLogs",
            log_group_name=f"/aws/lambda/{function_name}",  # Lambda's default: no setting needed
            retention=settings.retention,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.burst_role = iam.Role(
            self,
            "BurstRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="The chatbot's burst Lambda (CD-01's): its log group, its image, the chatbot's calls",
        )
        self.burst_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.burst_logs.log_group_arn],
            )
        )
        self._allow_pull(self.burst_role)
        self._allow_task_access(self.burst_role)
        # In the VPC, as the tasks: the search domain admits HTTPS from the VPC only. Lambda makes
        # the function's network interfaces in the private subnets as its execution role; nothing
        # connects to them (a function is invoked), so the group has no ingress.
        self.burst_security_group = ec2.SecurityGroup(
            self,
            "BurstSecurityGroup",
            vpc=vpc,
            description="The chatbot burst Lambda: no ingress (it is invoked), all outbound",
            allow_all_outbound=True,
        )
        vpc_access = iam.Policy(
            self,
            "BurstVpcAccess",
            roles=[self.burst_role],
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:CreateNetworkInterface",
                        "ec2:DeleteNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            ],
        )
        acknowledge(
            cfn(vpc_access),
            "AwsSolutions-IAM5[Resource::*]",
            "Lambda makes, lists and deletes the burst function's network interfaces in the VPC as its "
            "execution role, as AWS's AWSLambdaVPCAccessExecutionRole allows on every resource; "
            "EC2's Describe calls have no resource-level permission.",
        )
        # Lambda pulls a private image as the service, which the repository's policy must allow:
        # this account's burst function (and its versions and aliases) only.
        self.repository.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LambdaECRImageRetrievalPolicy",
                principals=[iam.ServicePrincipal("lambda.amazonaws.com")],
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "StringLike": {"aws:SourceArn": [function_arn, f"{function_arn}:*"]},
                },
            )
        )
        self._settings_outputs(
            {
                "LambdaRoleArn": (
                    "lambda_role_arn",
                    self.burst_role.role_arn,
                    "the burst function's execution role",
                ),
                "LambdaNamePrefix": (
                    "lambda_name_prefix",
                    settings.physical_name(""),
                    f"with the service {BURST_SERVICE}, the function this stage's API and alarm name",
                ),
                "LambdaAlias": ("lambda_alias", BURST_ALIAS, "what the API invokes, the alarm watches"),
                "LambdaMemoryMb": (
                    "lambda_memory_mb",
                    str(env.burst_lambda_memory_mib),
                    "the burst function's memory",
                ),
                "LambdaTimeoutS": (
                    "lambda_timeout_s",
                    str(BURST_TIMEOUT_S),
                    "API Gateway's integration timeout",
                ),
                "LambdaSubnetIds": (
                    "lambda_subnets",
                    cdk.Fn.join(",", private.subnet_ids),
                    "the burst function's subnets (the tasks' private ones), comma-separated",
                ),
                "LambdaSecurityGroupId": (
                    "lambda_security_groups",
                    self.burst_security_group.security_group_id,
                    "the burst function's security group",
                ),
            }
        )
        cdk.CfnOutput(
            self,
            "LambdaFunctionName",
            value=function_name,
            description=(
                f"The burst path's function, CD-01's: lambda_name_prefix + the service {BURST_SERVICE} "
                f"(compute = lambda); alias {BURST_ALIAS}"
            ),
            export_name=settings.physical_name(f"{SERVICE}-lambda-function-name"),
        )

    def _settings_outputs(self, outputs: dict[str, tuple[str, str, str]]) -> None:
        """One output per ``[environments.ENV.aws]`` key EcsServiceCompute or LambdaAliasCompute
        reads (its description names the key), exported as ``mangaassist-ENV-chatbot-KEY`` (with
        hyphens)."""
        for id, (key, value, what) in outputs.items():
            cdk.CfnOutput(
                self,
                id,
                value=value,
                description=f"[environments.{self.settings.name}.aws] {key}: {what}",
                export_name=self.settings.physical_name(f"{SERVICE}-{key.replace('_', '-')}"),
            )

    def _allow_task_access(self, role: iam.Role) -> None:
        """What the chatbot calls (``_task_access``), for a role it runs as: the tasks' task role,
        the burst function's execution role."""
        for statement in self._task_access():
            role.add_to_policy(statement)
        if self.settings.declaration.vector_indexes:
            acknowledge(
                cfn(role.node.find_child("DefaultPolicy")),
                f"AwsSolutions-IAM5[Resource::{self.resolve(self._search_paths())}]",
                "OpenSearch authorizes HTTP calls by path under the domain; the chatbot queries the "
                "vector indexes and their aliases (kb-live, CD-04) of its own stage's domain only.",
            )

    def _allow_pull(self, role: iam.Role) -> None:
        """A role that pulls the chatbot's images (the tasks' execution role,
        ``task_execution_role_arn``; the burst function's, ``lambda_role_arn``): the repository's
        layers, the key through ECR only, and the registry's token (no resource-level
        permission)."""
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
