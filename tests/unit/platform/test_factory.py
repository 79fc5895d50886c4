"""The factory: the one place that maps (environment, kind) to a provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from mangaassist.core.errors import ConfigError, NotFoundError
from mangaassist.core.resources import physical_name
from mangaassist.platform.aws.compute_ecs import DEFAULT_COLLECTOR_IMAGE, EcsServiceCompute
from mangaassist.platform.aws.compute_lambda import LambdaAliasCompute
from mangaassist.platform.aws.compute_routed import ServiceRoutedCompute
from mangaassist.platform.aws.compute_sagemaker import SageMakerEndpointCompute
from mangaassist.platform.aws.config_appconfig import AppConfigStore
from mangaassist.platform.aws.metrics_cloudwatch import CloudWatchMetrics
from mangaassist.platform.aws.model_registry_sagemaker import SageMakerModelRegistry
from mangaassist.platform.aws.tables_dynamodb import DynamoTables
from mangaassist.platform.aws.vector_opensearch import OpenSearchVectorIndex
from mangaassist.platform.compute import NotRunning
from mangaassist.platform.factory import Platform, platform_for, workload_platform
from mangaassist.platform.local.metrics import RouterMetrics
from mangaassist.platform.local.tables import SqliteTables
from mangaassist.platform.local.vector_lancedb import LanceVectorIndex
from mangaassist.platform.settings import load_settings
from mangaassist.platform.tables import Condition

CONFIG = """
[environments.dev]
provider = "local"
home = "state"

[environments.dev.services.chatbot]
app = "mangaassist.chatbot.app:create_app"
router_port = 0

[environments.prod]
provider = "aws"

[environments.prod.aws]
region = "eu-west-1"
sagemaker_role_arn = "arn:aws:iam::123456789012:role/sm"
model_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/intent:1"
artifact_bucket = "mangaassist-prod-artifacts"
opensearch_url = "https://search.example.invalid:443"
appconfig_application = "mangaassist"

[environments.prod.services.intent-model]
compute = "sagemaker"

[environments.staging]
provider = "aws"

[environments.staging.services.chatbot]
compute = "ecs"

[environments.odd]
provider = "gcp"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mangaassist.toml"
    path.write_text(CONFIG)
    monkeypatch.delenv("MANGAASSIST_HOME", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return path


def test_local_stores_live_under_the_environments_home_and_are_made_once(config: Path) -> None:
    with platform_for("dev", config=config) as platform:
        assert platform.home == (config.parent / "state").resolve()
        tables = platform.tables()
        assert isinstance(tables, SqliteTables) and platform.tables() is tables
        tables.put("orders", {"pk": "a", "sk": "1", "v": 1}, condition=Condition(exists=False))
        assert tables.get("orders", "a", "1") == {"pk": "a", "sk": "1", "v": 1}
        assert (platform.home / "tables.sqlite3").is_file()
        index = platform.vector_index()
        assert isinstance(index, LanceVectorIndex) and platform.vector_index() is index
    # closing drops what it made: the next call makes a new client
    assert platform.tables() is not tables


def test_local_compute_and_metrics_need_a_running_control_plane(config: Path) -> None:
    platform = platform_for("dev", config=config)
    with pytest.raises(NotRunning, match="mangaassist up"):
        platform.compute()
    with pytest.raises(NotRunning):
        platform.metrics()


def test_a_home_given_by_the_caller_wins(config: Path, tmp_path: Path) -> None:
    platform = platform_for("dev", config=config, home=tmp_path / "elsewhere")
    assert platform.home == (tmp_path / "elsewhere").resolve()


def test_aws_environments_get_the_aws_providers(config: Path) -> None:
    platform = platform_for("prod", config=config)
    assert isinstance(platform.vector_index(), OpenSearchVectorIndex)
    store = platform.config_store()
    assert isinstance(store, AppConfigStore) and store.environment == "prod"
    registry = platform.model_registry()
    assert isinstance(registry, SageMakerModelRegistry) and registry.bucket == "mangaassist-prod-artifacts"
    compute = platform.compute()
    assert isinstance(compute, SageMakerEndpointCompute)
    assert compute.endpoint_name("intent-model").startswith("prod-")
    tables = platform.tables()
    assert isinstance(tables, DynamoTables) and tables.physical("orders") == "mangaassist-prod-orders"


def test_a_kind_the_provider_lacks_is_an_error_naming_it_never_a_local_fallback(config: Path) -> None:
    platform = platform_for("prod", config=config)
    with pytest.raises(
        ConfigError, match="environment prod \\(provider aws\\): no TrackingRegistry provider"
    ):
        platform.tracking_registry()
    with pytest.raises(ConfigError, match=r"\[environments.prod.aws\] site_bucket is required"):
        platform.static_site()  # CD-05: S3 behind CloudFront, its bucket named in the settings
    with pytest.raises(ConfigError, match="runs on provider 'aws'"):
        platform.up()
    with pytest.raises(ConfigError, match=r"\[environments.staging.aws\] region is required"):
        platform_for("staging", config=config).compute()  # compute = "ecs": its settings are named


def test_missing_aws_settings_are_named(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[environments.staging.aws\] opensearch_url is required"):
        platform_for("staging", config=config).vector_index()
    with pytest.raises(ConfigError, match=r"\[environments.staging.aws\] region is required"):
        platform_for("staging", config=config).config_store()


def test_an_unknown_provider_is_refused_when_the_platform_is_made(config: Path) -> None:
    with pytest.raises(ConfigError, match="provider 'gcp' is unknown"):
        platform_for("odd", config=config)
    with pytest.raises(ConfigError, match=r"no \[environments.nope\]"):
        platform_for("nope", config=config)


def test_a_workload_reads_its_provider_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MANGAASSIST_PROVIDER", raising=False)
    monkeypatch.setenv("MANGAASSIST_ENV", "dev")
    platform = workload_platform(tmp_path / "home", tmp_path)
    assert isinstance(platform, Platform) and platform.provider == "local"
    assert isinstance(platform.tables(tmp_path / "t.sqlite3"), SqliteTables)
    monkeypatch.setenv("MANGAASSIST_PROVIDER", "aws")
    with pytest.raises(ConfigError, match=r"aws\] region is required"):
        workload_platform(tmp_path / "home", tmp_path).tables()


def test_settings_read_the_aws_table_and_service_compute(config: Path) -> None:
    prod = load_settings("prod", config)
    assert prod.aws["region"] == "eu-west-1"
    assert prod.services["intent-model"].compute == "sagemaker"
    bad = config.parent / "bad.toml"
    bad.write_text('[environments.x]\nprovider = "aws"\naws = "eu-west-1"\n')
    with pytest.raises(ConfigError, match=r"environments\.x\.aws: expected a table"):
        load_settings("x", bad)


def test_router_metrics_is_the_local_metrics_provider() -> None:
    assert RouterMetrics.per_request is True


def test_judges_read_the_routers_records_unless_the_environment_names_prometheus(config: Path) -> None:
    assert load_settings("dev", config).monitoring is None
    chosen = config.parent / "prom.toml"
    chosen.write_text(
        '[environments.x]\nprovider = "local"\n[environments.x.monitoring]\njudge_source = "prometheus"\n'
    )
    monitoring = load_settings("x", chosen).monitoring
    assert monitoring is not None and monitoring.judge_source == "prometheus"
    chosen.write_text(
        '[environments.x]\nprovider = "local"\n[environments.x.monitoring]\nscrape_interval_s = 1\n'
    )
    monitoring = load_settings("x", chosen).monitoring
    assert monitoring is not None and monitoring.judge_source == "router"
    chosen.write_text(
        '[environments.x]\nprovider = "local"\n[environments.x.monitoring]\njudge_source = "grafana"\n'
    )
    with pytest.raises(
        ConfigError, match=r"environments\.x\.monitoring\.judge_source: expected one of router, prometheus"
    ):
        load_settings("x", chosen)


def test_aws_services_get_ecs_or_sagemaker_by_their_compute_and_metrics_from_cloudwatch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mangaassist.toml"
    ecs = (
        'cluster = "mangaassist-prod"\n'
        'listener_arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/lb/1/2"\n'
        'vpc_id = "vpc-1"\nsubnets = ["subnet-1", "subnet-2"]\nsecurity_groups = "sg-1"\n'
        'task_execution_role_arn = "arn:aws:iam::123456789012:role/exec"\n'
    )
    path.write_text(
        CONFIG
        + '[environments.prod.services.chatbot]\ncompute = "ecs"\n'
        + '[environments.mixed]\nprovider = "aws"\n[environments.mixed.aws]\nregion = "eu-west-1"\n'
        + ecs
        + '[environments.mixed.services.chatbot]\ncompute = "ecs"\n'
        + '[environments.sized]\nprovider = "aws"\n[environments.sized.aws]\nregion = "eu-west-1"\n'
        + ecs
        + "task_cpu = 1024\ntask_memory_mib = 2048\nmax_tasks = 12\n"
        + '[environments.sized.services.chatbot]\ncompute = "ecs"\n'
        + '[environments.partial]\nprovider = "aws"\n[environments.partial.aws]\nregion = "eu-west-1"\n'
        + '[environments.partial.services.chatbot]\ncompute = "ecs"\n'
        + '[environments.odd-compute]\nprovider = "aws"\n[environments.odd-compute.services.chatbot]\n'
        + 'compute = "fargate-spot"\n'
    )
    mixed = platform_for("mixed", config=path).compute()
    assert isinstance(mixed, EcsServiceCompute) and mixed.family("chatbot") == "mixed-chatbot"
    assert mixed.subnets == ["subnet-1", "subnet-2"] and mixed.security_groups == ["sg-1"]
    # without the compute stack's TaskCpu, TaskMemoryMib and MaxTasks: the defaults, no scaling
    assert (mixed.cpu, mixed.memory, mixed.max_replicas) == ("512", "1024", None)
    assert mixed.autoscaling.meta.service_model.service_name == "application-autoscaling"
    sized = platform_for("sized", config=path).compute()
    assert isinstance(sized, EcsServiceCompute)
    assert (sized.cpu, sized.memory, sized.max_replicas) == ("1024", "2048", 12)
    with pytest.raises(ConfigError, match=r"\[environments.prod.aws\] cluster is required"):
        platform_for("prod", config=path).compute()  # chatbot on ECS, intent-model on SageMaker
    with pytest.raises(ConfigError, match=r"\[environments.partial.aws\] cluster is required"):
        platform_for("partial", config=path).compute()
    with pytest.raises(ConfigError, match="services without one: chatbot \\(compute = 'fargate-spot'\\)"):
        platform_for("odd-compute", config=path).compute()
    metrics = platform_for("mixed", config=path).metrics()
    assert isinstance(metrics, CloudWatchMetrics) and metrics.per_request is False


def test_ecs_tasks_get_a_collector_only_with_amp_remote_write_url(tmp_path: Path) -> None:
    path = tmp_path / "mangaassist.toml"
    ecs = (
        'region = "eu-west-1"\ncluster = "c"\nvpc_id = "vpc-1"\nsubnets = ["s-1"]\n'
        'security_groups = ["sg-1"]\ntask_execution_role_arn = "arn:aws:iam::1:role/x"\n'
        'listener_arn = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/lb/1/2"\n'
    )
    url = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1234abcd/api/v1/remote_write"
    digest = "public.ecr.aws/aws-observability/aws-otel-collector@sha256:" + "a" * 64
    environments = {
        "plain": "",
        "amp": f'metrics = "amp"\namp_workspace_id = "ws-1234abcd"\namp_remote_write_url = "{url}"\n',
        "pinned": f'amp_remote_write_url = "{url}"\namp_collector_image = "{digest}"\n',
        "orphan": f'amp_collector_image = "{digest}"\n',
        "bad": 'amp_remote_write_url = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1"\n',
    }
    path.write_text(
        "".join(
            f'[environments.{name}]\nprovider = "aws"\n[environments.{name}.aws]\n{ecs}{extra}'
            f'[environments.{name}.services.chatbot]\ncompute = "ecs"\n'
            for name, extra in environments.items()
        )
    )
    plain = platform_for("plain", config=path).compute()
    assert isinstance(plain, EcsServiceCompute) and plain.amp_remote_write_url is None
    amp = platform_for("amp", config=path).compute()
    assert isinstance(amp, EcsServiceCompute) and amp.amp_remote_write_url == url
    assert amp.collector_image == DEFAULT_COLLECTOR_IMAGE and amp.region == "eu-west-1"
    pinned = platform_for("pinned", config=path).compute()
    assert isinstance(pinned, EcsServiceCompute) and pinned.collector_image == digest
    with pytest.raises(ConfigError, match="amp_collector_image is set without amp_remote_write_url"):
        platform_for("orphan", config=path).compute()
    with pytest.raises(ConfigError, match="is not a remote-write URL"):
        platform_for("bad", config=path).compute()


def test_an_environment_with_both_kinds_gets_one_compute_routing_by_service(tmp_path: Path) -> None:
    path = tmp_path / "mangaassist.toml"
    path.write_text(
        CONFIG.replace(
            "[environments.prod.services.intent-model]",
            "[environments.prod.services.chatbot]\n"
            'compute = "ecs"\n[environments.prod.services.intent-model]',
        ).replace(
            'appconfig_application = "mangaassist"',
            'appconfig_application = "mangaassist"\ncluster = "c"\nvpc_id = "vpc-1"\nsubnets = ["s-1"]\n'
            'security_groups = ["sg-1"]\ntask_execution_role_arn = "arn:aws:iam::1:role/x"\n'
            'listener_arn = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/lb/1/2"',
        )
    )
    compute = platform_for("prod", config=path).compute()
    assert isinstance(compute, ServiceRoutedCompute)
    assert isinstance(compute.for_service("chatbot"), EcsServiceCompute)
    assert isinstance(compute.for_service("intent-model"), SageMakerEndpointCompute)
    assert compute.services() == ["chatbot", "intent-model"]
    with pytest.raises(NotFoundError, match="have: chatbot, intent-model"):
        compute.status("nope")


def test_a_service_with_compute_lambda_gets_versions_behind_a_weighted_alias(tmp_path: Path) -> None:
    path = tmp_path / "mangaassist.toml"
    lam = (
        '[environments.burst]\nprovider = "aws"\n[environments.burst.aws]\nregion = "eu-west-1"\n'
        'lambda_role_arn = "arn:aws:iam::123456789012:role/fn"\n'
        'lambda_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chatbot-lambda:1"\n'
        "lambda_memory_mb = 3008\n"
        '[environments.burst.services.chatbot]\ncompute = "lambda"\n'
    )
    path.write_text(
        CONFIG
        + lam
        + lam.replace("burst", "noimage").replace('lambda_image = "', 'other = "')
        + lam.replace("burst", "badmem").replace("3008", '"lots"')
        + lam.replace("burst", "badurl").replace(
            "lambda_memory_mb = 3008", 'lambda_function_url_auth = "open"'
        )
    )
    compute = platform_for("burst", config=path).compute()
    assert isinstance(compute, LambdaAliasCompute)
    assert compute.function_name("chatbot") == "burst-chatbot" and compute.alias == "live"
    assert compute.memory_mb == 3008 and compute.function_url_auth == "AWS_IAM"
    with pytest.raises(ConfigError, match=r"\[environments.noimage.aws\] lambda_image is required"):
        platform_for("noimage", config=path).compute()
    with pytest.raises(ConfigError, match=r"\[environments.badmem.aws\] lambda_memory_mb = 'lots'"):
        platform_for("badmem", config=path).compute()
    with pytest.raises(ConfigError, match="lambda_function_url_auth = 'open': expected AWS_IAM, NONE or off"):
        platform_for("badurl", config=path).compute()
    assert compute.api_source_arn is None  # no API is let invoke the alias unless one is named


def test_the_lambda_function_name_prefix_and_the_api_permission_are_settings(tmp_path: Path) -> None:
    """CD-02's burst path: lambda_name_prefix makes the provider name the function as the compute
    stack does (mangaassist-ENV-chatbot-burst), lambda_api_source_arn (the edge stack's output) the
    API Gateway the alias lets invoke it."""
    path = tmp_path / "mangaassist.toml"
    source_arn = "arn:aws:execute-api:eu-west-1:123456789012:abc123/*/*/burst/*"
    lam = (
        '[environments.qa]\nprovider = "aws"\n[environments.qa.aws]\nregion = "eu-west-1"\n'
        'lambda_role_arn = "arn:aws:iam::123456789012:role/fn"\n'
        'lambda_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chatbot-lambda:1"\n'
        'lambda_name_prefix = "mangaassist-qa-"\n'
        f'lambda_api_source_arn = "{source_arn}"\n'
        '[environments.qa.services.chatbot-burst]\ncompute = "lambda"\n'
    )
    path.write_text(
        CONFIG
        + lam
        + lam.replace("qa", "badprefix").replace("mangaassist-badprefix-", "not/a/prefix-")
        + lam.replace("qa", "badarn").replace(source_arn, "arn:aws:iam::1:role/x")
        + lam.replace("qa", "noprefix").replace('lambda_name_prefix = "mangaassist-noprefix-"\n', "")
    )
    compute = platform_for("qa", config=path).compute()
    assert isinstance(compute, LambdaAliasCompute)
    assert compute.function_name("chatbot-burst") == physical_name("qa", "chatbot-burst")
    assert compute.api_source_arn == source_arn
    default = platform_for("noprefix", config=path).compute()
    assert isinstance(default, LambdaAliasCompute)
    assert default.function_name("chatbot-burst") == "noprefix-chatbot-burst"  # ENV- as before
    with pytest.raises(ConfigError, match=r"\[environments.badprefix.aws\]: name_prefix 'not/a/prefix-'"):
        platform_for("badprefix", config=path).compute()
    with pytest.raises(ConfigError, match=r"\[environments.badarn.aws\]: .*not an execute-api ARN"):
        platform_for("badarn", config=path).compute()


def test_the_burst_function_s_vpc_is_two_settings_given_together(tmp_path: Path) -> None:
    """CD-02's compute stack outputs the burst function's subnets and security group; the provider
    takes both (a list or a comma-separated string, as ``subnets`` on ECS) or neither."""
    path = tmp_path / "mangaassist.toml"
    lam = (
        '[environments.vpc]\nprovider = "aws"\n[environments.vpc.aws]\nregion = "eu-west-1"\n'
        'lambda_role_arn = "arn:aws:iam::123456789012:role/fn"\n'
        'lambda_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/chatbot-lambda:1"\n'
        'lambda_subnets = "subnet-a, subnet-b"\nlambda_security_groups = ["sg-1"]\n'
        '[environments.vpc.services.chatbot-burst]\ncompute = "lambda"\n'
    )
    path.write_text(
        CONFIG
        + lam
        + lam.replace("vpc", "half").replace('lambda_security_groups = ["sg-1"]\n', "")
        + lam.replace("vpc", "none")
        .replace('lambda_subnets = "subnet-a, subnet-b"\n', "")
        .replace('lambda_security_groups = ["sg-1"]\n', "")
    )
    compute = platform_for("vpc", config=path).compute()
    assert isinstance(compute, LambdaAliasCompute)
    assert compute.subnets == ["subnet-a", "subnet-b"] and compute.security_groups == ["sg-1"]
    outside = platform_for("none", config=path).compute()
    assert isinstance(outside, LambdaAliasCompute)
    assert outside.subnets == [] and outside.security_groups == []
    with pytest.raises(ConfigError, match=r"\[environments.half.aws\]: subnets without security_groups"):
        platform_for("half", config=path).compute()
