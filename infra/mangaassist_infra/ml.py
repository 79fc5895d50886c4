"""ml: the intent classifier on SageMaker: its model package group (CD-03 registers versions in it),
an image repository, an execution role, and the model, endpoint config and endpoint of the
declared model endpoint, sized per environment, its volumes encrypted with the stage's ML key."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.data import DataStack
from mangaassist_infra.nag import acknowledge, cfn

ARTIFACTS = "artifacts"
VARIANT = "primary"
IMAGE_TAG = "latest"
"""Placeholder tag until CD-03 pushes the model server image and registers a package."""


def model_data_key(endpoint: str) -> str:
    """Where CD-03 puts the approved model archive in the artifacts bucket."""
    return f"models/{endpoint}/model.tar.gz"


class MlStack(InfraStack):
    def __init__(self, scope: Construct, settings: StageSettings, data: DataStack) -> None:
        super().__init__(scope, "ml", settings, "SageMaker: intent model package group and endpoint")
        self.add_stack_dependency(data, "the model archive is read from the artifacts bucket")
        self.endpoints: dict[str, sagemaker.CfnEndpoint] = {}
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{settings.physical_name('ml')}",
            description="Encrypts the SageMaker endpoints' storage volumes",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        for name, declared in settings.declaration.model_endpoints.items():
            self.endpoints[name] = self._endpoint(name, declared.description, data)

    def _endpoint(self, name: str, description: str, data: DataStack) -> sagemaker.CfnEndpoint:
        settings = self.settings
        physical = settings.physical_name(name)
        prefix = name.title()
        group = sagemaker.CfnModelPackageGroup(
            self,
            f"{prefix}PackageGroup",
            model_package_group_name=physical,
            model_package_group_description=description,
        )
        # the registry's model versions: kept when the stack or the group goes (a stateful resource)
        group.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        repository = ecr.Repository(
            self,
            f"{prefix}Repository",
            repository_name=settings.physical_name(f"{name}-model"),
            image_scan_on_push=True,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=self.key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # SageMaker names the group itself: /aws/sagemaker/Endpoints/<endpoint name>
        endpoint_logs = logs.LogGroup(
            self,
            f"{prefix}EndpointLogs",
            log_group_name=f"/aws/sagemaker/Endpoints/{physical}",
            retention=settings.retention,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        artifacts = data.buckets[ARTIFACTS]
        role = iam.Role(
            self,
            f"{prefix}ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"SageMaker runs the {name} model as this role",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[artifacts.arn_for_objects(model_data_key(name))],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[repository.repository_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[endpoint_logs.log_group_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt"],
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"ecr.{self.region}.amazonaws.com"}},
            )
        )
        token_and_metrics = iam.PolicyStatement(
            actions=["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"], resources=["*"]
        )
        role.add_to_policy(token_and_metrics)
        acknowledge(
            cfn(role.node.find_child("DefaultPolicy")),
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level "
            "permissions (IAM's service authorization reference); every other statement names its "
            "resource.",
        )

        model = sagemaker.CfnModel(
            self,
            f"{prefix}Model",
            execution_role_arn=role.role_arn,
            enable_network_isolation=True,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=f"{repository.repository_uri}:{IMAGE_TAG}",
                model_data_url=artifacts.s3_url_for_object(model_data_key(name)),
                environment={"MANGAASSIST_ENV": settings.name, "MANGAASSIST_MODEL": name},
            ),
        )
        model.node.add_dependency(role.node.find_child("DefaultPolicy"))  # the role's grants first
        config = sagemaker.CfnEndpointConfig(
            self,
            f"{prefix}EndpointConfig",
            kms_key_id=self.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=model.attr_model_name,
                    initial_instance_count=1,
                    initial_variant_weight=1.0,
                    instance_type=settings.environment.model_instance_type,
                )
            ],
        )
        endpoint = sagemaker.CfnEndpoint(
            self,
            f"{prefix}Endpoint",
            endpoint_name=physical,
            endpoint_config_name=config.attr_endpoint_config_name,
        )
        cdk.CfnOutput(self, f"{prefix}EndpointName", value=endpoint.attr_endpoint_name)
        return endpoint
