"""monitoring: the stage's alarm topic (KMS-encrypted, TLS only), alarms on what the other stacks
run (ALB 5xx and response time, DynamoDB throttles per table, the burst Lambda's errors on its
``live`` alias, by name as CD-01 makes the function, SageMaker 5xx invocation errors), CD-08's SLO
burn-rate alarms compiled from ``monitoring/slos`` (composite alarms notify the topic) and one
dashboard of the same metrics."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from mangaassist.delivery.monitoring.build import resolve
from mangaassist.delivery.monitoring.cloudwatch import alarms_document
from mangaassist_infra.common import InfraStack, StageSettings
from mangaassist_infra.compute import BURST_ALIAS, ComputeStack, burst_function_name
from mangaassist_infra.data import DataStack
from mangaassist_infra.ml import VARIANT, MlStack

MINUTE = cdk.Duration.minutes(1)
RESPONSE_TIME_P99_SECONDS = 2.0
ERRORS_PER_MINUTE = 5


class MonitoringStack(InfraStack):
    def __init__(
        self,
        scope: Construct,
        settings: StageSettings,
        data: DataStack,
        compute: ComputeStack,
        ml: MlStack,
    ) -> None:
        super().__init__(scope, "monitoring", settings, "alarm topic, CloudWatch alarms, dashboard")
        for stack in (data, compute, ml):
            self.add_stack_dependency(stack, "its alarms watch that stack's resources")

        key = kms.Key(
            self,
            "AlarmsKey",
            alias=f"alias/{settings.physical_name('alarms')}",
            description="Encrypts the alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Alarms",
            topic_name=settings.physical_name("alarms"),
            display_name=f"MangaAssist {settings.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        self.alarms: list[cloudwatch.Alarm] = []
        alb = compute.alb.metrics
        panels: dict[str, list[cloudwatch.IMetric]] = {}

        elb_5xx = alb.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=MINUTE, statistic="Sum")
        target_5xx = alb.http_code_target(
            elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=MINUTE, statistic="Sum"
        )
        self._alarm("alb-5xx", "the ALB's own 5xx", elb_5xx, ERRORS_PER_MINUTE)
        self._alarm("target-5xx", "the chatbot tasks' 5xx", target_5xx, ERRORS_PER_MINUTE)
        response_time = alb.target_response_time(period=MINUTE, statistic="p99")
        self._alarm("response-time", "p99 target response time (s)", response_time, RESPONSE_TIME_P99_SECONDS)
        panels["Chatbot ALB"] = [elb_5xx, target_5xx]
        panels["Chatbot p99 response time (s)"] = [response_time]

        throttles: list[cloudwatch.IMetric] = []
        for name, table in data.tables.items():
            ident = name.replace("-", "_")  # ids are unique within a graph: one pair per table
            metric = cloudwatch.MathExpression(
                expression=f"{ident}_reads + {ident}_writes",
                label=f"{name} throttle events",
                period=MINUTE,
                using_metrics={
                    f"{ident}_reads": table.metric("ReadThrottleEvents", period=MINUTE, statistic="Sum"),
                    f"{ident}_writes": table.metric("WriteThrottleEvents", period=MINUTE, statistic="Sum"),
                },
            )
            self._alarm(f"{name}-throttles", f"the {name} table's throttle events", metric, 1)
            throttles.append(metric)
        panels["DynamoDB throttle events"] = throttles

        # CD-01's function, by name (it need not exist yet): its alias's errors, as Lambda reports them
        burst = burst_function_name(settings)
        burst_errors = cloudwatch.Metric(
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions_map={"FunctionName": burst, "Resource": f"{burst}:{BURST_ALIAS}"},
            period=MINUTE,
            statistic="Sum",
        )
        self._alarm("burst-errors", "the burst Lambda's errors", burst_errors, ERRORS_PER_MINUTE)
        panels["Burst Lambda errors"] = [burst_errors]

        model_errors: list[cloudwatch.IMetric] = []
        for name, endpoint in ml.endpoints.items():
            invocation_5xx = cloudwatch.Metric(
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions_map={"EndpointName": endpoint.attr_endpoint_name, "VariantName": VARIANT},
                period=MINUTE,
                statistic="Sum",
            )
            self._alarm(
                f"{name}-endpoint-5xx", f"the {name} endpoint's 5xx", invocation_5xx, ERRORS_PER_MINUTE
            )
            model_errors.append(invocation_5xx)
        panels["SageMaker 5xx invocation errors"] = model_errors
        self.slo_alarms = self._slo_alarms()

        graphs: list[cloudwatch.IWidget] = [
            cloudwatch.GraphWidget(title=title, left=metrics, width=12)
            for title, metrics in panels.items()
            if metrics
        ]
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=settings.physical_name("chatbot"),
            widgets=[
                [cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24)],
                *(graphs[i : i + 2] for i in range(0, len(graphs), 2)),
            ],
        )

    def _slo_alarms(self) -> int:
        """CD-08's SLO burn-rate alarms for this environment, from ``monitoring/slos`` (the same
        specs, objectives and windows as the Prometheus rules): one metric-math alarm per window, a
        composite alarm per condition (both windows in ALARM) that notifies the topic. Returns how
        many alarms it added."""
        slos, ws, _ = resolve([self.settings.root / "monitoring" / "slos"], self.settings.name)
        document = alarms_document(slos, ws, self.settings.name)
        children: dict[str, cdk.CfnResource] = {}
        for i, alarm in enumerate(document["alarms"]):
            children[alarm["AlarmName"]] = cdk.CfnResource(
                self, f"SloAlarm{i}", type="AWS::CloudWatch::Alarm", properties=alarm
            )
        for i, composite in enumerate(document["composite_alarms"]):
            properties = {
                **composite,
                "ActionsEnabled": True,
                "AlarmActions": [self.topic.topic_arn],
                "OKActions": [self.topic.topic_arn],
            }
            resource = cdk.CfnResource(
                self, f"SloCondition{i}", type="AWS::CloudWatch::CompositeAlarm", properties=properties
            )
            for name, child in children.items():  # created after the alarms its rule names
                if f'"{name}"' in composite["AlarmRule"]:
                    resource.add_resource_dependency(child)
        return len(children) + len(document["composite_alarms"])

    def _alarm(self, name: str, what: str, metric: cloudwatch.IMetric, threshold: float) -> None:
        alarm = cloudwatch.Alarm(
            self,
            name,
            alarm_name=self.settings.physical_name(name),
            alarm_description=f"{what} at or above {threshold} in 3 of the last 5 minutes",
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
