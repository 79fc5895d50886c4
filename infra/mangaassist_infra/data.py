"""data: one DynamoDB table per declared table, the declared buckets plus the access-logs bucket,
and the OpenSearch domain that holds the declared vector indexes. Everything here is RETAINed:
deleting a stack never deletes data."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from aws_cdk import aws_s3 as s3
from constructs import Construct

from mangaassist.core.resources import Table
from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.nag import acknowledge, cfn
from mangaassist_infra.network import NetworkStack

ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
PROJECTIONS = {"ALL": dynamodb.ProjectionType.ALL, "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY}
SEARCH_DOMAIN = "search"
"""The domain's logical name: mangaassist-ENV-search (OpenSearch allows 28 characters, too few for
mangaassist-staging-knowledge). The vector indexes are indexes inside it, named by physical_name."""


def secure_bucket(
    scope: Construct,
    id: str,
    *,
    bucket_name: str | None = None,
    access_logs: s3.IBucket | None,
    logs_prefix: str = "",
    object_ownership: s3.ObjectOwnership = s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    lifecycle_rules: list[s3.LifecycleRule] | None = None,
) -> s3.Bucket:
    """Versioned, encrypted (SSE-S3: ALB and CloudFront log delivery take nothing else), no public
    access, TLS only, its server access logs in ``access_logs``, kept when its stack goes."""
    return s3.Bucket(
        scope,
        id,
        bucket_name=bucket_name,
        versioned=True,
        encryption=s3.BucketEncryption.S3_MANAGED,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        object_ownership=object_ownership,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=logs_prefix or None,
        lifecycle_rules=lifecycle_rules,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )


def _zone_count(instances: int, zones: int) -> int:
    """Zones the domain spreads over: 2 or 3, dividing its instances evenly, else 1."""
    for count in (3, 2):
        if count <= zones and instances % count == 0:
            return count
    return 1


class DataStack(InfraStack):
    def __init__(self, scope: Construct, settings: StageSettings, network: NetworkStack) -> None:
        super().__init__(scope, "data", settings, "DynamoDB tables, S3 buckets, the vector-index domain")
        self.add_stack_dependency(network, "the search domain lives in the VPC")
        declaration = settings.declaration

        self.tables = {name: self._table(name, table) for name, table in declaration.tables.items()}

        logs_expire = cdk.Duration.days(settings.environment.log_retention_days)
        self.access_logs = secure_bucket(
            self,
            "AccessLogs",
            access_logs=None,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=logs_expire, noncurrent_version_expiration=logs_expire)
            ],
        )
        acknowledge(
            cfn(self.access_logs),
            "AwsSolutions-S1",
            "This bucket is the destination of every other bucket's server access logs (and the "
            "ALB's); logging its own access into itself would loop.",
        )
        self.buckets = {
            name: secure_bucket(
                self,
                f"{name.title()}Bucket",
                bucket_name=settings.physical_name(name),
                access_logs=self.access_logs,
                logs_prefix=f"s3/{name}/",
            )
            for name in declaration.buckets
        }

        self.search_domain = self._search_domain(network) if declaration.vector_indexes else None
        for name in declaration.vector_indexes:
            cdk.CfnOutput(
                self,
                f"{name.title()}VectorIndex",
                value=settings.physical_name(name),
                description=f"OpenSearch index of the {name!r} vector index, in the search domain",
            )

    def _table(self, name: str, declared: Table) -> dynamodb.Table:
        def key(attribute: str | None) -> dynamodb.Attribute | None:
            if attribute is None:
                return None
            return dynamodb.Attribute(name=attribute, type=ATTRIBUTE_TYPES[declared.attributes[attribute]])

        table = dynamodb.Table(
            self,
            f"{name.title()}Table",
            table_name=self.settings.physical_name(name),
            partition_key=key(declared.partition_key),
            sort_key=key(declared.sort_key),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=self.settings.environment.point_in_time_recovery
            ),
            deletion_protection=True,
            stream=dynamodb.StreamViewType(declared.stream) if declared.stream else None,
            time_to_live_attribute=declared.ttl_attribute,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        for index in declared.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=key(index.partition_key),
                sort_key=key(index.sort_key),
                projection_type=PROJECTIONS[index.projection],
            )
        return table

    def _search_domain(self, network: NetworkStack) -> opensearch.Domain:
        env = self.settings.environment
        zones = _zone_count(env.opensearch_instances, env.availability_zones)
        security_group = ec2.SecurityGroup(
            self,
            "SearchSecurityGroup",
            vpc=network.vpc,
            description="The search domain: HTTPS from inside the VPC only",
            allow_all_outbound=False,
        )
        security_group.add_ingress_rule(ec2.Peer.ipv4(network.cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
        log_groups = {
            kind: self.log_group(f"Search{kind.title()}Logs", f"search/{kind}")
            for kind in ("application", "slow-search", "slow-index")
        }
        # One resource policy for the three groups instead of CDK's custom resource per domain.
        logs.ResourcePolicy(
            self,
            "SearchLogsPolicy",
            resource_policy_name=self.settings.physical_name("search-logs"),
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in log_groups.values()],
                    conditions={"StringEquals": {"aws:SourceAccount": self.account}},
                )
            ],
        )
        domain = opensearch.Domain(
            self,
            "SearchDomain",
            domain_name=self.settings.physical_name(SEARCH_DOMAIN),
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            capacity=opensearch.CapacityConfig(
                data_nodes=env.opensearch_instances,
                data_node_instance_type=env.opensearch_instance_type,
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(
                volume_size=env.opensearch_volume_gib, volume_type=ec2.EbsDeviceVolumeType.GP3
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(
                enabled=zones > 1, availability_zone_count=zones if zones > 1 else None
            ),
            vpc=network.vpc,
            vpc_subnets=[network.private_subnets(zones)],
            security_groups=[security_group],
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            logging=opensearch.LoggingOptions(
                app_log_enabled=True,
                app_log_group=log_groups["application"],
                slow_search_log_enabled=True,
                slow_search_log_group=log_groups["slow-search"],
                slow_index_log_enabled=True,
                slow_index_log_group=log_groups["slow-index"],
            ),
            suppress_logs_resource_policy=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # The access policy on the domain itself (CDK's access_policies would set it with a custom
        # resource): this account's IAM principals, signed requests only; no anonymous access.
        domain_arn = self.format_arn(
            service="es", resource="domain", resource_name=self.settings.physical_name(SEARCH_DOMAIN)
        )
        cfn_domain = cfn(domain)
        assert isinstance(cfn_domain, opensearch.CfnDomain)
        cfn_domain.access_policies = iam.PolicyDocument(
            statements=[
                iam.PolicyStatement(
                    principals=[iam.AccountRootPrincipal()],
                    actions=[
                        "es:ESHttpGet",
                        "es:ESHttpHead",
                        "es:ESHttpPost",
                        "es:ESHttpPut",
                        "es:ESHttpDelete",
                    ],
                    resources=[f"{domain_arn}/*"],
                )
            ]
        ).to_json()
        acknowledge(
            cfn_domain,
            "AwsSolutions-OS3",
            "A VPC domain takes no IP-based access policy; it is reachable only inside the VPC "
            "(its security group admits HTTPS from the VPC's range) and by this account's IAM principals.",
        )
        acknowledge(
            cfn_domain,
            "AwsSolutions-OS4",
            "environments.toml sizes no dedicated master nodes: the vector indexes are rebuilt by "
            "the knowledge-base pipeline (CD-04), so a cluster-manager loss costs a re-index, not data.",
        )
        if zones == 1:
            acknowledge(
                cfn_domain,
                "AwsSolutions-OS7",
                f"{self.settings.name} runs {env.opensearch_instances} search instance(s); zone "
                "awareness needs two or more spread evenly over the zones (staging and prod have it).",
            )
        return domain
