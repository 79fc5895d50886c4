"""edge: the chat widget's site (a private S3 bucket behind CloudFront with origin access control,
HTTPS only, security headers, access logs, a web ACL) and the chat API's front door (an API
Gateway REST API: ``/burst/...`` to the Lambda burst path's ``live`` alias, everything else proxied
to the ALB; access logs, throttling, a web ACL).

The burst function is CD-01's (``LambdaAliasCompute`` makes it on the burst service's first deploy,
after this stack is applied): the integration names its alias by ARN (``compute.burst_alias_arn``)
and adds no ``AWS::Lambda::Permission``, which CloudFormation could not create on a function that
does not exist yet. The API's permission to invoke the alias is the provider's: the output
``LambdaApiSourceArn`` (``lambda_api_source_arn``) is what it lets invoke it. Until the first
deploy, ``/burst/...`` answers API Gateway's 500 (the function is not there)."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.compute import SERVICE, ComputeStack, burst_alias_arn
from mangaassist_infra.data import DataStack, secure_bucket
from mangaassist_infra.nag import acknowledge, cfn

SITE = "widget"
CLOUDFRONT_REGION = "us-east-1"
"""A CloudFront web ACL must live in us-east-1."""
REQUESTS_PER_TASK = 50
"""The API's steady throttle per chatbot task at full scale (requests per second)."""
FUNCTIONS = Path(__file__).parent / "functions"
"""The widget distribution's CloudFront Functions (JavaScript, runtime 2.0): ``site_request.js``
maps a preview's ``/previews/BRANCH/assets/...`` to the shared ``/assets/...`` and a directory URL to
its ``index.html``; ``site_response.js`` names an entry file's release (its S3 metadata) in
``X-MangaAssist-Release``."""
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)


def web_acl(scope: Construct, id: str, *, name: str, waf_scope: str, rate_limit: int) -> wafv2.CfnWebACL:
    """AWS's managed common, known-bad-inputs and IP-reputation rules, and a per-IP rate limit
    (requests per five minutes)."""

    def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
        )

    rules = [
        wafv2.CfnWebACL.RuleProperty(
            name=group,
            priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=group
                )
            ),
            visibility_config=visibility(group),
        )
        for priority, group in enumerate(MANAGED_RULE_GROUPS)
    ]
    rules.append(
        wafv2.CfnWebACL.RuleProperty(
            name="rate-limit-per-ip",
            priority=len(rules),
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    limit=rate_limit, aggregate_key_type="IP"
                )
            ),
            visibility_config=visibility("rate-limit-per-ip"),
        )
    )
    return wafv2.CfnWebACL(
        scope,
        id,
        name=name,
        scope=waf_scope,
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=visibility(name),
        rules=rules,
    )


class EdgeStack(InfraStack):
    def __init__(
        self, scope: Construct, settings: StageSettings, data: DataStack, compute: ComputeStack
    ) -> None:
        super().__init__(scope, "edge", settings, "CloudFront for the widget, API Gateway for the chat API")
        self.add_stack_dependency(data, "access logs go to the access-logs bucket")
        self.add_stack_dependency(compute, "the API fronts the ALB and the burst Lambda's alias")
        self._site(data)
        self._api(compute)

    def _site(self, data: DataStack) -> None:
        settings = self.settings
        site = settings.declaration.sites[SITE]
        self.site_bucket = secure_bucket(
            self,
            "SiteBucket",
            bucket_name=settings.physical_name(SITE),
            access_logs=data.access_logs,
            logs_prefix=f"s3/{SITE}/",
        )
        # CloudFront's standard logs need ACLs (object writer); this bucket holds nothing else.
        cloudfront_logs = secure_bucket(
            self,
            "CloudFrontLogs",
            access_logs=data.access_logs,
            logs_prefix="s3/cloudfront-logs/",
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
        )
        web_acl_arn = None
        if self.region == CLOUDFRONT_REGION:
            web_acl_arn = web_acl(
                self,
                "SiteWebAcl",
                name=settings.physical_name(f"{SITE}-site"),
                waf_scope="CLOUDFRONT",
                rate_limit=2000,
            ).attr_arn
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"{settings.physical_name(SITE)}: {site.description}"[:128],
            default_root_object=site.index_document,
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.site_bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.HTTPS_ONLY,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=cloudfront.ResponseHeadersPolicy.SECURITY_HEADERS,
                compress=True,
                function_associations=[
                    cloudfront.FunctionAssociation(
                        event_type=cloudfront.FunctionEventType.VIEWER_REQUEST,
                        function=self._function("SiteRequest", "site_request.js"),
                    ),
                    cloudfront.FunctionAssociation(
                        event_type=cloudfront.FunctionEventType.VIEWER_RESPONSE,
                        function=self._function("SiteResponse", "site_response.js"),
                    ),
                ],
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=cloudfront_logs,
            log_file_prefix="cloudfront/",
            web_acl_id=web_acl_arn,
        )
        cfn_distribution = cfn(self.distribution)
        if web_acl_arn is None:
            acknowledge(
                cfn_distribution,
                "AwsSolutions-CFR2",
                f"A CloudFront web ACL can only be created in {CLOUDFRONT_REGION}; this stage is in "
                f"{self.region} and the widget's files are static and public.",
            )
        acknowledge(
            cfn_distribution,
            "AwsSolutions-CFR1",
            "The chat widget is served to readers in every country the storefront sells to; "
            "there is no country to block.",
        )
        acknowledge(
            cfn_distribution,
            "AwsSolutions-CFR4",
            "No custom domain or ACM certificate is declared yet, so the distribution uses the "
            "default *.cloudfront.net certificate, whose security policy CloudFront fixes itself.",
        )
        cdk.CfnOutput(self, "SiteUrl", value=f"https://{self.distribution.distribution_domain_name}")

    def _function(self, id: str, file: str) -> cloudfront.Function:
        return cloudfront.Function(
            self,
            id,
            code=cloudfront.FunctionCode.from_file(file_path=str(FUNCTIONS / file)),
            runtime=cloudfront.FunctionRuntime.JS_2_0,
            comment=f"{self.settings.physical_name(SITE)}: {file}",
        )

    def _api(self, compute: ComputeStack) -> None:
        settings = self.settings
        env = settings.environment
        rate = REQUESTS_PER_TASK * env.chatbot_max_tasks
        access_logs = self.log_group("ApiAccessLogs", "chatbot-api/access")
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=settings.physical_name("chatbot-api"),
            description="The chat API: burst path to the Lambda alias, the rest to the ALB",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name="live",
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=rate,
                throttling_burst_limit=2 * rate,
            ),
        )
        acknowledge(
            cfn(self.api.node.find_child("CloudWatchRole")),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role: AWS maintains this policy for exactly this "
            "role, and API Gateway names the log groups it writes.",
        )
        # Every method validates what it declares (the proxy path parameter); bodies pass through.
        validator = self.api.add_request_validator(
            "Validator", validate_request_parameters=True, validate_request_body=True
        )
        # CD-01's function, by name: no permission here (LambdaAliasCompute adds it, see above)
        burst = lambda_.Function.from_function_attributes(
            self,
            "BurstLive",
            function_arn=burst_alias_arn(self, settings),
            same_environment=False,
            skip_permissions=True,
        )
        self.api.root.add_resource("burst").add_resource("{proxy+}").add_method(
            "ANY", apigw.LambdaIntegration(burst), request_validator=validator
        )
        alb = f"http://{compute.alb.load_balancer_dns_name}"
        proxy_parameters = {"integration.request.path.proxy": "method.request.path.proxy"}
        self.api.root.add_method(
            "ANY", apigw.HttpIntegration(f"{alb}/", http_method="ANY"), request_validator=validator
        )
        self.api.root.add_resource("{proxy+}").add_method(
            "ANY",
            apigw.HttpIntegration(
                f"{alb}/{{proxy}}",
                http_method="ANY",
                options=apigw.IntegrationOptions(request_parameters=proxy_parameters),
            ),
            request_parameters={"method.request.path.proxy": True},
            request_validator=validator,
        )
        for method in self.api.methods:
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(
                    cfn(method),
                    rule,
                    "The chat API is anonymous by design: the widget talks to it before anyone signs "
                    "in, and the chatbot authenticates sessions and orders itself (CD-01).",
                )

        api_acl = web_acl(
            self,
            "ApiWebAcl",
            name=settings.physical_name("chatbot-api"),
            waf_scope="REGIONAL",
            rate_limit=1000,
        )
        wafv2.CfnWebACLAssociation(
            self,
            "ApiWebAclAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=api_acl.attr_arn,
        )
        cdk.CfnOutput(self, "ApiUrl", value=self.api.url)
        cdk.CfnOutput(
            self,
            "LambdaApiSourceArn",
            # every stage and method of /burst/... (the live stage and the console's test invoke)
            value=self.api.arn_for_execute_api("*", "/burst/*", "*"),
            description=(
                f"[environments.{settings.name}.aws] lambda_api_source_arn: the API the burst "
                "function's alias lets invoke it (CD-01 adds the permission)"
            ),
            export_name=settings.physical_name(f"{SERVICE}-lambda-api-source-arn"),
        )
