"""The one place that maps (environment, kind of resource) to a provider.

``platform_for(environment)`` reads the environment's settings (``mangaassist.toml``) and returns a
``Platform``: the environment's resources, each made on first use and kept for the ``Platform``'s
lifetime (one CLI invocation, one pipeline run, one chatbot worker), never in a module global.
Pipelines, the chatbot, the demo and the CLI get every resource from here; an import-linter
contract forbids importing ``platform.local`` or ``platform.aws`` anywhere else.

=================  ======================================  =========================================
kind               local                                   aws
=================  ======================================  =========================================
``Compute``        ``LocalCompute`` (control plane)        ``EcsServiceCompute`` (ECS Fargate behind
                                                           an ALB, ``compute = "ecs"``),
                                                           ``LambdaAliasCompute`` (Lambda versions
                                                           behind a weighted alias, ``compute =
                                                           "lambda"``) and
                                                           ``SageMakerEndpointCompute`` (model
                                                           endpoints, ``compute = "sagemaker"``);
                                                           several kinds: ``ServiceRoutedCompute``
``Metrics``        ``RouterMetrics`` (the routers' records) ``CloudWatchMetrics`` (ALB / SageMaker
                   or ``PrometheusMetrics`` (their series  per-revision metrics and the workload's
                   in Prometheus, ``judge_source``)        EMF quality flags; aggregates) or
                                                           ``AmpMetrics`` (the router series in
                                                           Amazon Managed Prometheus, PromQL with
                                                           SigV4, ``metrics = "amp"``)
``Tables``         ``SqliteTables``                        ``DynamoTables`` (``mangaassist-ENV-NAME``)
``VectorIndex``    ``LanceVectorIndex``                    ``OpenSearchVectorIndex``
``ConfigStore``    ``HttpConfigStore`` (config server)     ``AppConfigStore``
``ModelRegistry``  ``MlflowModelRegistry``                 ``SageMakerModelRegistry``
``StaticSite``     ``LocalStaticSite`` (files and SQLite    ``S3StaticSite`` (S3 ``site_bucket``,
                   under ``HOME/sites/widget``, served by  CloudFront ``site_distribution_id``)
                   the edge ``up`` starts)
``Provisioner``    ``LocalProvisioner`` (CD-02's local     CloudFormation change sets (``stacks()``,
                   resources)                              the CDK app's templates)
``ImageScanner``   none (wheel-based revisions)            ``EcrImageScanner`` (ECR scan findings of an
                                                           image by digest: CD-01's ``scan`` gate)
=================  ======================================  =========================================

A kind a provider does not have yet raises ``ConfigError`` naming the environment and the kind, so
nothing silently falls back to another provider. The aws provider's settings are the
``[environments.NAME.aws]`` table (``region``, ``sagemaker_role_arn``, ``model_image``,
``artifact_bucket``, ``opensearch_url``, ``appconfig_application``, ``site_bucket``,
``site_distribution_id``; for ECS ``cluster``, ``listener_arn``, ``vpc_id``, ``subnets``,
``security_groups``, ``task_execution_role_arn`` and optionally ``task_role_arn``, ``app_image``,
``container_port``, ``task_cpu``, ``task_memory_mib``, ``max_tasks`` (each revision's autoscaling
maximum), ``log_group``, ``app_url``, ``metrics_namespace``, ``amp_remote_write_url`` (an ADOT
collector in every task remote-writes the workers' request series to that AMP workspace) and
``amp_collector_image``; for Lambda
``lambda_role_arn``, ``lambda_image`` and optionally ``lambda_alias``, ``lambda_memory_mb``,
``lambda_timeout_s``, ``lambda_function_url_auth``, ``lambda_name_prefix`` (the function is
``PREFIX + SERVICE``; default ``ENV-``; CD-02's burst path is ``mangaassist-ENV-`` with the service
``chatbot-burst``), ``lambda_api_source_arn`` (the API Gateway the alias lets invoke it),
``lambda_subnets`` with ``lambda_security_groups`` (the function's VPC, both or neither); for
Amazon Managed Prometheus ``metrics = "amp"`` with ``amp_workspace_id`` or ``amp_workspace_url``);
a missing one is named in the error (docs/aws.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import physical_name
from mangaassist.platform import daemons
from mangaassist.platform.compute import Compute
from mangaassist.platform.config_store import ConfigStore
from mangaassist.platform.image_scan import ImageScanner
from mangaassist.platform.infra import Provisioner
from mangaassist.platform.metrics import Metrics
from mangaassist.platform.model_registry import ModelRegistry, TrackingRegistry
from mangaassist.platform.monitoring import RuleHost
from mangaassist.platform.settings import PlatformSettings, find_config, load_settings
from mangaassist.platform.static_site import StaticSite
from mangaassist.platform.tables import Tables
from mangaassist.platform.vector import VectorIndex

if TYPE_CHECKING:
    from mangaassist.platform.aws.audit import S3AuditAnchor
    from mangaassist.platform.aws.dryrun import DryRun
    from mangaassist.platform.embeddings import Embedder
    from mangaassist.platform.local.client import DownReport, UpReport

PROVIDERS = ("local", "aws")
_dry_run: DryRun | None = None
"""The dry run in progress in this process (``dry_run``), or None."""
AWS_COMPUTE_KINDS = ("ecs", "lambda", "sagemaker")
"""What a service's ``compute`` may name on the aws provider."""
AWS_ENDPOINT_ENV = "MANGAASSIST_AWS_ENDPOINT_URL"
"""Another endpoint than AWS's for the engine's own AWS clients (the audit anchor and key): a moto
server in tests and drills. Unset: boto3's own resolution (region, credentials, endpoints)."""
DASHBOARD = ("dashboard", "mangaassist.dashboard")
"""The delivery dashboard's process (``platform.daemons``: name, module), started by ``up``."""


@dataclass(frozen=True)
class UpResult:
    """What ``Platform.up`` started: the control plane's report and the config server's URL."""

    report: UpReport
    config_url: str | None
    edge_url: str | None = None
    """The edge's URL (CD-05: the widget and ``/v1``) when the environment has an ``edge_port``."""
    dashboard_url: str | None = None
    """The delivery dashboard's URL (engine metrics) when the environment has a ``dashboard_port``."""


@dataclass(frozen=True)
class DownResult:
    report: DownReport
    config_server_stopped: bool
    edge_stopped: bool = False
    dashboard_stopped: bool = False


class Platform:
    """The resources of one environment, made on first use and kept until ``close``."""

    def __init__(self, settings: PlatformSettings, config_path: Path | None = None) -> None:
        if settings.provider not in PROVIDERS:
            raise ConfigError(
                f"environment {settings.environment}: provider {settings.provider!r} is unknown "
                f"(have: {', '.join(PROVIDERS)})"
            )
        self.settings = settings
        self.config_path = config_path
        self._made: dict[str, Any] = {}

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def environment(self) -> str:
        return self.settings.environment

    @property
    def provider(self) -> str:
        return self.settings.provider

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def dry_run(self) -> bool:
        """Whether a dry run is in progress (``dry_run``): the aws clients change nothing, so a step
        must not expect to see its changes (a new revision answering, a site serving a release)."""
        return _dry_run is not None

    def close(self) -> None:
        for made in self._made.values():
            close = getattr(made, "close", None)
            if callable(close):
                close()
        self._made.clear()

    def _once(self, key: str, make: Any) -> Any:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def _missing(self, kind: str, why: str) -> ConfigError:
        return ConfigError(
            f"environment {self.environment} (provider {self.provider}): no {kind} provider yet ({why})"
        )

    # -- kinds ---------------------------------------------------------------------------------------

    def compute(self) -> Compute:
        """Services, revisions, weights, pins and shadows (``platform.compute``)."""
        if self.provider == "local":
            from mangaassist.platform.local.client import LocalCompute

            return self._once("compute", lambda: LocalCompute(self.settings.run_dir))  # type: ignore[no-any-return]
        return self._once("compute", self._aws_compute)  # type: ignore[no-any-return]

    def metrics(self) -> Metrics:
        """Per-revision request outcomes, what judges read (``platform.metrics``)."""
        if self.provider == "local":
            from mangaassist.platform.local.client import LocalCompute
            from mangaassist.platform.local.metrics import RouterMetrics

            compute = self.compute()
            assert isinstance(compute, LocalCompute)
            router = self._once("metrics:router", lambda: RouterMetrics(compute))
            monitoring = self.settings.monitoring
            if monitoring is None or monitoring.judge_source == "router":
                return router  # type: ignore[no-any-return]
            from mangaassist.platform.local.metrics_prometheus import PrometheusMetrics

            rules = self.rule_host()
            return self._once("metrics", lambda: PrometheusMetrics(rules.url, router))  # type: ignore[no-any-return]
        from mangaassist.platform.aws.metrics_cloudwatch import NAMESPACE, CloudWatchMetrics, sources_of

        source = str(self.settings.aws.get("metrics") or "cloudwatch")
        if source not in ("cloudwatch", "amp"):
            raise ConfigError(
                f"environment {self.environment}: [environments.{self.environment}.aws] "
                f"metrics = {source!r}: expected cloudwatch (the default) or amp (Amazon Managed Prometheus)"
            )
        if source == "amp":
            return self._once("metrics", self._amp_metrics)  # type: ignore[no-any-return]
        compute = self.compute()
        namespace = str(self.settings.aws.get("metrics_namespace") or NAMESPACE)
        return self._once(  # type: ignore[no-any-return]
            "metrics",
            lambda: CloudWatchMetrics(
                self._client("cloudwatch"),
                sources_of(compute),
                namespace=namespace,
                alarm_prefix=physical_name(self.environment, "slo-"),
            ),
        )

    def tables(self, path: Path | None = None) -> Tables:
        """Items by partition and sort key (``platform.tables``); ``path``: another local database.
        The environment may take its tables from another provider (``providers.tables``)."""
        if self.settings.provider_of("tables") == "local":
            from mangaassist.platform.local.tables import SqliteTables

            where = path or self.home / "tables.sqlite3"
            return self._once(f"tables:{where}", lambda: SqliteTables(where))  # type: ignore[no-any-return]
        from mangaassist.platform.aws.tables_dynamodb import DynamoTables  # (``path`` is a local file)

        prefix = physical_name(self.environment, "")
        return self._once(  # type: ignore[no-any-return]
            "tables", lambda: DynamoTables(self._client("dynamodb"), table_prefix=prefix)
        )

    def vector_index(self) -> VectorIndex:
        """Versioned knowledge-base indexes behind an alias (``platform.vector``)."""
        if self.provider == "local":
            from mangaassist.platform.local.vector_lancedb import LanceVectorIndex

            return self._once(  # type: ignore[no-any-return]
                "vector", lambda: LanceVectorIndex(self.home / "kb" / "index")
            )
        return self._once("vector", self._aws_vector_index)  # type: ignore[no-any-return]

    def embedder(self) -> Embedder:
        """The environment's embedding model (``platform.embeddings``): Amazon Bedrock's Titan Text
        Embeddings on an aws environment that names ``embedding_model`` (and
        ``embedding_dimensions``, default 1024), else the in-process model ``MANGAASSIST_EMBEDDER``
        names (all-MiniLM-L6-v2 by default)."""
        if self.provider != "local" and self.settings.aws.get("embedding_model"):
            return self._once("embedder", self._bedrock_embedder)  # type: ignore[no-any-return]
        from mangaassist.platform.embeddings import make_embedder

        kind = os.environ.get("MANGAASSIST_EMBEDDER", "minilm")
        return self._once(f"embedder:{kind}", lambda: make_embedder(kind))  # type: ignore[no-any-return]

    def _bedrock_embedder(self) -> Embedder:
        import boto3
        from botocore.config import Config

        from mangaassist.platform.aws.embeddings_bedrock import BedrockTitanEmbedder

        raw = self.settings.aws.get("embedding_dimensions", 1024)
        try:
            dimensions = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"environment {self.environment}: [environments.{self.environment}.aws] "
                f"embedding_dimensions = {raw!r}: expected 256, 512 or 1024"
            ) from None
        client = boto3.client(
            "bedrock-runtime",
            region_name=self._aws("region"),
            endpoint_url=self.settings.aws.get("endpoint_url") or None,
            config=Config(retries={"mode": "adaptive", "max_attempts": 8}),
        )
        return BedrockTitanEmbedder(_recorded(client), self._aws("embedding_model"), dimensions)

    def config_store(self, url: str | None = None) -> ConfigStore:
        """Versioned config profiles and their rollouts (``platform.config_store``).

        Local: the config server at ``url``, else ``MANGAASSIST_CONFIG_URL``, else the one of this
        environment's state directory (started if it does not run)."""
        if self.provider == "local":
            from mangaassist.platform.local.config_server import HttpConfigStore, ensure_server

            where = url or os.environ.get("MANGAASSIST_CONFIG_URL") or ensure_server(self.home)
            return self._once(f"config:{where}", lambda: HttpConfigStore(str(where)))  # type: ignore[no-any-return]
        return self._once("config", self._aws_config_store)  # type: ignore[no-any-return]

    def model_registry(self, tracking_uri: str | None = None) -> ModelRegistry:
        """Model versions, aliases and their history (``platform.model_registry``).

        ``tracking_uri``: another MLflow store than the environment's (a run param, so a resumed
        run opens the same one; the demo's fresh registry)."""
        if self.provider == "local":
            return self.tracking_registry(tracking_uri)
        if tracking_uri:
            raise ConfigError(f"environment {self.environment}: tracking_uri is for the local provider")
        return self._once("registry", self._aws_model_registry)  # type: ignore[no-any-return]

    def tracking_registry(self, tracking_uri: str | None = None) -> TrackingRegistry:
        """The model registry with the runs that train its versions (``TrackingRegistry``), what
        training writes to. Local: the same ``MlflowModelRegistry`` as ``model_registry``: under the
        state directory, or at ``MLFLOW_TRACKING_URI`` if the user set it, or at ``tracking_uri``."""
        if self.provider == "local":
            from mangaassist.platform.local.model_registry_mlflow import MlflowModelRegistry

            if tracking_uri:
                return self._once(  # type: ignore[no-any-return]
                    f"registry:{tracking_uri}", lambda: MlflowModelRegistry.at(tracking_uri)
                )
            return self._once("registry", lambda: MlflowModelRegistry.from_home(self.home))  # type: ignore[no-any-return]
        raise self._missing("TrackingRegistry", "training runs are tracked in MLflow, on the local provider")

    def provisioner(self) -> Provisioner:
        """The declared resources on this environment's provider (CD-02, ``platform.infra``)."""
        if self.provider == "local":
            from mangaassist.platform.local.infra import LocalProvisioner

            return self._once(  # type: ignore[no-any-return]
                "provisioner",
                lambda: LocalProvisioner(self.home, self.settings.root, list(self.settings.services)),
            )
        raise self._missing(
            "Provisioner", "aws resources are provisioned from the CDK app's templates: use stacks()"
        )

    def rule_host(self) -> RuleHost:
        """Where CD-08's rules go and the Prometheus evaluating them (``platform.monitoring``)."""
        if self.provider == "local":
            from mangaassist.platform.local.monitoring import LocalRuleHost

            return self._once("rules", lambda: LocalRuleHost(self.home, self.settings.run_dir))  # type: ignore[no-any-return]
        raise self._missing("RuleHost", "on AWS the SLO alarms ship with CD-02's monitoring stack")

    def stacks(self) -> Any:
        """CloudFormation change sets and drift detection (``platform.aws.cloudformation``)."""
        if self.provider != "aws":
            raise self._missing("CloudFormation", "the local provider provisions with provisioner()")
        from mangaassist.platform.aws.cloudformation import ChangeSetApplier

        bucket = self.settings.aws.get("artifact_bucket")
        return self._once(
            "stacks",
            lambda: ChangeSetApplier(
                self._client("cloudformation"),
                s3=self._client("s3") if bucket else None,
                template_bucket=str(bucket) if bucket else None,
            ),
        )

    def static_site(self) -> StaticSite:
        """Releases of the widget behind a CDN (CD-05, ``platform.static_site``).

        Local: the site ``widget`` under the state directory, served by the edge (its URL: the
        running edge's, else ``edge_port``'s). Aws: the ``site_bucket`` behind the CloudFront
        distribution ``site_distribution_id`` (``[environments.NAME.aws]``)."""
        if self.provider == "local":
            from mangaassist.platform.local.edge import DEFAULT_PORT, running_url
            from mangaassist.platform.local.static_site import LocalStaticSite

            port = self.settings.edge_port or DEFAULT_PORT
            fallback = f"http://{self.settings.host}:{port}"
            return self._once(  # type: ignore[no-any-return]
                "static_site",
                lambda: LocalStaticSite(
                    self._site_root(),
                    environment=self.environment,
                    base_url=lambda: running_url(self.home) or fallback,
                ),
            )
        from mangaassist.platform.aws.static_site_s3 import S3StaticSite

        return self._once(  # type: ignore[no-any-return]
            "static_site",
            lambda: S3StaticSite(
                self._client("s3"),
                self._client("cloudfront"),
                bucket=self._aws("site_bucket"),
                distribution_id=self._aws("site_distribution_id"),
                environment=self.environment,
            ),
        )

    def image_scanner(self) -> ImageScanner:
        """Vulnerability findings of the service's container images (``platform.image_scan``): Amazon
        ECR's scans on aws (``platform.aws.image_scan``). The local platform runs wheel-based
        revisions and has no images: ``ConfigError``."""
        if self.provider == "local":
            raise self._missing(
                "ImageScanner", "the local platform runs wheel-based revisions, not container images"
            )
        from mangaassist.platform.aws.image_scan import EcrImageScanner

        return self._once("image_scanner", lambda: EcrImageScanner(self._client("ecr")))  # type: ignore[no-any-return]

    def _site_root(self) -> Path:
        """The local site's directory: the one CD-02 provisions for ``[sites.widget]``."""
        return self.home / "sites" / "widget"

    # -- the local platform's own life (``mangaassist up`` / ``down``) --------------------------------

    def up(self, *, wait_s: float = 240.0) -> UpResult:
        """Start the environment's control plane (and config server, and edge) unless they run.

        The edge (``edge_port``) serves the widget's releases and proxies ``/v1`` to the chatbot
        service's router."""
        self._require_local("up")
        from mangaassist.platform.local.client import start_control_plane
        from mangaassist.platform.local.config_server import ensure_server

        extra = {"MANGAASSIST_HOME": str(self.home)}
        config_url = ensure_server(self.home) if self.settings.config_server else None
        if config_url:  # every worker follows the environment's config server (CD-06)
            extra["MANGAASSIST_CONFIG_URL"] = config_url
        report = start_control_plane(self.settings, self._config_path(), wait_s=wait_s, extra_env=extra)
        edge_url = None
        if self.settings.edge_port is not None:
            from mangaassist.platform.local.edge import DEFAULT_API, ensure_edge

            edge_url = ensure_edge(
                self.home,
                site_root=self._site_root(),
                environment=self.environment,
                api=report.services.get("chatbot", DEFAULT_API),
                port=self.settings.edge_port,
                host=self.settings.host,
            )
        return UpResult(report, config_url, edge_url, self.ensure_dashboard())

    def ensure_dashboard(self) -> str | None:
        """The delivery dashboard's URL, started if it does not run; None when the environment has
        no ``dashboard_port``. ``up`` calls it; the demo calls it first, so every release shows."""
        if self.settings.dashboard_port is None:
            return None
        # a process of a higher layer: named, not imported
        args = ["--home", str(self.home), "--port", str(self.settings.dashboard_port)]
        args += ["--host", self.settings.host, "--environment", self.environment]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        if os.environ.get("MANGAASSIST_STATE_URL"):
            args += ["--state-url", os.environ["MANGAASSIST_STATE_URL"]]
        dashboard = daemons.ensure(
            self.home, *DASHBOARD, args, detail=f" (port {self.settings.dashboard_port})"
        )
        return str(dashboard["url"])

    def dashboard_running(self) -> bool:
        return daemons.running(self.home, DASHBOARD[0]) is not None

    def stop_dashboard(self) -> bool:
        """Stop the dashboard (False if none ran); ``down`` does it too."""
        return daemons.stop(self.home, *DASHBOARD)

    def down(self) -> DownResult:
        """Stop the control plane, every worker (checked by PID), the config server and the edge."""
        self._require_local("down")
        from mangaassist.platform.local.client import stop_control_plane
        from mangaassist.platform.local.config_server import stop_server
        from mangaassist.platform.local.edge import stop_edge

        self.close()
        report = stop_control_plane(self.settings)
        config_stopped = bool(self.settings.config_server and stop_server(self.home))
        return DownResult(report, config_stopped, stop_edge(self.home), self.stop_dashboard())

    def running(self) -> bool:
        """Whether the environment's local control plane runs."""
        self._require_local("status")
        from mangaassist.platform.local.client import read_pid

        return read_pid(self.settings.run_dir) is not None

    def describe(self) -> dict[str, Any]:
        """The whole platform as JSON (``mangaassist status``): services, revisions, workers, and
        ``edge`` (``url``, ``pid``, ``api``, ``environment``; None when it does not run)."""
        self._require_local("status")
        from mangaassist.platform.local.client import LocalCompute
        from mangaassist.platform.local.edge import running as running_edge

        compute = self.compute()
        assert isinstance(compute, LocalCompute)
        dashboard = daemons.running(self.home, DASHBOARD[0])
        return {**compute.raw_status(), "edge": running_edge(self.home), "dashboard": dashboard}

    def config_server_url(self) -> str:
        """The environment's config server, started if it does not run (local)."""
        self._require_local("config serve")
        from mangaassist.platform.local.config_server import ensure_server

        return ensure_server(self.home)

    def serve_config_server(self, port: int = 0) -> None:
        """Run the environment's config server in the foreground until interrupted (local)."""
        self._require_local("config serve")
        from mangaassist.platform.local.config_server import serve

        serve(self.home, port)

    def stop_config_server(self) -> bool:
        self._require_local("config server stop")
        from mangaassist.platform.local.config_server import stop_server

        return stop_server(self.home)

    def _require_local(self, what: str) -> None:
        if self.provider != "local":
            raise ConfigError(
                f"environment {self.environment} runs on provider {self.provider!r}; `{what}` runs local "
                "environments (the aws provider's resources are provisioned by the infrastructure pipeline)"
            )

    def _config_path(self) -> Path:
        return self.config_path or find_config()

    # -- aws ------------------------------------------------------------------------------------------

    def _aws(self, key: str) -> str:
        table: Mapping[str, Any] = self.settings.aws
        value = table.get(key)
        if not value:
            raise ConfigError(
                f"environment {self.environment}: [environments.{self.environment}.aws] {key} is required "
                f"for this resource (have: {', '.join(sorted(table)) or 'nothing'})"
            )
        return str(value)

    def _client(self, name: str) -> Any:
        import boto3

        make: Any = boto3.client  # typed per service name by boto3-stubs; the name is a variable here
        # endpoint_url: another endpoint than AWS's (a moto server in tests and drills)
        endpoint = self.settings.aws.get("endpoint_url") or None
        return self._once(
            f"boto3:{name}",
            lambda: _recorded(make(name, region_name=self._aws("region"), endpoint_url=endpoint)),
        )

    def _aws_list(self, key: str, *, required: bool = True) -> list[str]:
        """A list setting (``subnets = ["subnet-1", ...]`` or ``"subnet-1,subnet-2"``), named when
        missing (unless not ``required``: then empty)."""
        value = self.settings.aws.get(key)
        items = value if isinstance(value, list) else str(value or "").split(",")
        found = [str(v).strip() for v in items if str(v).strip()]
        if not found and required:
            self._aws(key)  # raises the error naming the key
        return found

    def _aws_compute(self) -> Compute:
        """ECS Fargate behind an ALB for services with ``compute = "ecs"``, Lambda versions behind a
        weighted alias for ``compute = "lambda"``, SageMaker endpoints for ``compute = "sagemaker"``;
        an environment with several kinds gets one ``Compute`` routing by service."""
        kinds = {name: str(s.compute or "") for name, s in self.settings.services.items()}
        others = sorted(n for n, k in kinds.items() if k not in AWS_COMPUTE_KINDS)
        if not kinds or others:
            named = [f"{n} (compute = {kinds[n]!r})" if kinds[n] else n for n in others]
            raise self._missing(
                "Compute",
                'services run on aws with compute = "ecs" (ECS Fargate behind an ALB), "lambda" (Lambda '
                'versions behind a weighted alias) or "sagemaker" (model endpoints); services without '
                f"one: {', '.join(named) or 'none declared'}",
            )
        made = {kind: self._aws_compute_of(kind) for kind in sorted(set(kinds.values()))}
        if len(made) == 1:
            return next(iter(made.values()))
        from mangaassist.platform.aws.compute_routed import ServiceRoutedCompute

        return ServiceRoutedCompute({name: made[kind] for name, kind in kinds.items()})

    def _aws_compute_of(self, kind: str) -> Compute:
        if kind == "ecs":
            from mangaassist.platform.aws.compute_ecs import EcsServiceCompute

            aws: Mapping[str, Any] = self.settings.aws
            return EcsServiceCompute(
                self._client("ecs"),
                self._client("elbv2"),
                cluster=self._aws("cluster"),
                listener_arn=self._aws("listener_arn"),
                vpc_id=self._aws("vpc_id"),
                subnets=self._aws_list("subnets"),
                security_groups=self._aws_list("security_groups"),
                execution_role_arn=self._aws("task_execution_role_arn"),
                task_role_arn=str(aws["task_role_arn"]) if aws.get("task_role_arn") else None,
                image=str(aws["app_image"]) if aws.get("app_image") else None,
                environment=self.environment,
                name_prefix=f"{self.environment}-",
                container_port=int(aws.get("container_port") or 8000),
                cpu=str(self._aws_int("task_cpu", 512)),
                memory=str(self._aws_int("task_memory_mib", 1024)),
                log_group=str(aws["log_group"]) if aws.get("log_group") else None,
                region=self._aws("region"),
                base_url=str(aws["app_url"]) if aws.get("app_url") else None,
                workload_env=workload_aws_settings(aws),
                dry_run=self.dry_run,
                autoscaling=self._client("application-autoscaling"),
                max_replicas=self._aws_int("max_tasks", 1) if aws.get("max_tasks") else None,
                **self._amp_collector(),
            )
        if kind == "lambda":
            return self._aws_lambda_compute()
        from mangaassist.platform.aws.compute_sagemaker import SageMakerEndpointCompute

        return SageMakerEndpointCompute(
            self._client("sagemaker"),
            execution_role_arn=self._aws("sagemaker_role_arn"),
            image=self._aws("model_image"),
            name_prefix=f"{self.environment}-",
            cloudwatch=self._client("cloudwatch"),
            s3=self._client("s3"),
            artifact_bucket=self._aws("artifact_bucket"),
        )

    def _amp_collector(self) -> dict[str, Any]:
        """``EcsServiceCompute``'s collector settings: ``amp_remote_write_url`` (the workspace's
        ``.../api/v1/remote_write``; none: no collector) and ``amp_collector_image``."""
        aws: Mapping[str, Any] = self.settings.aws
        url, image = aws.get("amp_remote_write_url"), aws.get("amp_collector_image")
        if image and not url:
            raise ConfigError(
                f"environment {self.environment}: [environments.{self.environment}.aws] amp_collector_image "
                "is set without amp_remote_write_url (the workspace's .../api/v1/remote_write)"
            )
        if not url:
            return {}
        return {"amp_remote_write_url": str(url), **({"collector_image": str(image)} if image else {})}

    def _aws_int(self, key: str, default: int) -> int:
        raw = self.settings.aws.get(key, default)
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"environment {self.environment}: [environments.{self.environment}.aws] {key} = {raw!r}: "
                "expected a whole number"
            ) from None

    def _aws_lambda_compute(self) -> Compute:
        from mangaassist.platform.aws.compute_lambda import LambdaAliasCompute

        aws: Mapping[str, Any] = self.settings.aws
        where = f"[environments.{self.environment}.aws]"
        auth = str(aws.get("lambda_function_url_auth") or "AWS_IAM")
        if auth not in ("AWS_IAM", "NONE", "off"):
            raise ConfigError(
                f"environment {self.environment}: {where} "
                f"lambda_function_url_auth = {auth!r}: expected AWS_IAM, NONE or off (no function URL)"
            )
        source_arn = aws.get("lambda_api_source_arn")
        settings: dict[str, Any] = {
            "role_arn": self._aws("lambda_role_arn"),
            "image": self._aws("lambda_image"),
            "alias": str(aws.get("lambda_alias") or "live"),
            "environment": self.environment,
            # the function is PREFIX + SERVICE: CD-02's burst path is mangaassist-ENV-chatbot-burst
            "name_prefix": str(aws.get("lambda_name_prefix", f"{self.environment}-")),
            "memory_mb": self._aws_int("lambda_memory_mb", 2048),
            "timeout_s": self._aws_int("lambda_timeout_s", 30),
            "container_port": self._aws_int("container_port", 8000),
            "function_url_auth": None if auth == "off" else auth,
            "base_url": str(aws["app_url"]) if aws.get("app_url") else None,
            "workload_env": workload_aws_settings(aws),
            "dry_run": self.dry_run,
            "region": self._aws("region"),  # the pins' SigV4 (AWS_IAM); credentials: boto3's chain
            "api_source_arn": str(source_arn) if source_arn else None,  # CD-02's edge stack output
            # the function's VpcConfig (both or neither): CD-02's compute stack outputs
            "subnets": self._aws_list("lambda_subnets", required=False),
            "security_groups": self._aws_list("lambda_security_groups", required=False),
        }
        try:
            return LambdaAliasCompute(self._client("lambda"), **settings)
        except ConfigError as exc:
            raise ConfigError(f"environment {self.environment}: {where}: {exc}") from None

    def _amp_metrics(self) -> Metrics:
        """Amazon Managed Prometheus: ``amp_workspace_url``, else ``amp_workspace_id`` in ``region``;
        the SLO alarms' alerts from CloudWatch."""
        import boto3

        from mangaassist.platform.aws.metrics_amp import AmpMetrics, workspace_url
        from mangaassist.platform.aws.metrics_cloudwatch import CloudWatchMetrics

        region = self._aws("region")
        url = self.settings.aws.get("amp_workspace_url")
        where = f"[environments.{self.environment}.aws]"
        if not url and not self.settings.aws.get("amp_workspace_id"):
            raise ConfigError(
                f"environment {self.environment}: {where} metrics = 'amp' needs amp_workspace_id (ws-...) or "
                "amp_workspace_url (https://aps-workspaces.REGION.amazonaws.com/workspaces/WS_ID)"
            )
        try:
            base = str(url) if url else workspace_url(self._aws("amp_workspace_id"), region)
            alarms = CloudWatchMetrics(
                self._client("cloudwatch"),
                lambda _s: {},
                alarm_prefix=physical_name(self.environment, "slo-"),
            )
            return AmpMetrics(base, region, session=boto3.Session(region_name=region), alerts=alarms)
        except ConfigError as exc:
            raise ConfigError(f"environment {self.environment}: {where}: {exc}") from None

    def _aws_vector_index(self) -> VectorIndex:
        from opensearchpy import OpenSearch

        from mangaassist.platform.aws.vector_opensearch import OpenSearchVectorIndex

        client: Any = OpenSearch(hosts=[self._aws("opensearch_url")])
        if _dry_run is not None:
            from mangaassist.platform.aws.dryrun import OpenSearchDryRun

            client = OpenSearchDryRun(client, _dry_run)
        return OpenSearchVectorIndex(client)

    def _aws_config_store(self) -> ConfigStore:
        from mangaassist.platform.aws.config_appconfig import AppConfigStore

        return AppConfigStore(
            self._client("appconfig"),
            self._client("appconfigdata"),
            self._client("cloudwatch"),
            application=self._aws("appconfig_application"),
            environment=self.environment,
        )

    def _aws_model_registry(self) -> ModelRegistry:
        from mangaassist.platform.aws.model_registry_sagemaker import SageMakerModelRegistry

        return SageMakerModelRegistry(
            self._client("sagemaker"),
            self._client("s3"),
            bucket=self._aws("artifact_bucket"),
            image=self._aws("model_image"),
            group_prefix=f"{self.environment}-",
        )


def _recorded(client: Any) -> Any:
    """``client`` itself, or behind the dry run in progress (``dry_run``)."""
    return client if _dry_run is None else _dry_run.wrap(client)


@contextmanager
def dry_run(settings: PlatformSettings) -> Iterator[DryRun]:
    """A dry run of ``settings``' aws environment in this process: every AWS client a ``Platform``
    makes meanwhile records the calls that may change something instead of making them
    (``platform.aws.dryrun``). Reads are made when boto3 finds credentials (against the environment's
    ``endpoint_url`` if it has one: a moto server); otherwise they are answered as in an empty
    account. Yields the record."""
    global _dry_run
    if settings.provider != "aws":
        raise ConfigError(
            f"environment {settings.environment} runs on provider {settings.provider!r}: a dry run "
            "records AWS calls, so it needs an aws environment"
        )
    if _dry_run is not None:
        raise ConfigError("a dry run is already in progress in this process")
    import boto3

    from mangaassist.platform.aws.dryrun import DryRun

    region = str(settings.aws.get("region") or "us-east-1")
    _dry_run = DryRun(reads_made=boto3.Session(region_name=region).get_credentials() is not None)
    try:
        yield _dry_run
    finally:
        _dry_run = None


def settings_for(environment: str | None = None, home: Path | None = None) -> PlatformSettings:
    """The environment's settings from ``mangaassist.toml`` (default ``MANGAASSIST_ENV`` or ``dev``)."""
    return load_settings(environment, home=home)


def aws_preflight(settings: PlatformSettings) -> list[str]:
    """What an aws environment lacks before a run may start there (empty: nothing). Checked without
    calling AWS: the region and credentials boto3 would sign with. Local environments need nothing."""
    if settings.provider != "aws":
        return []
    import boto3

    where = f"[environments.{settings.environment}.aws]"
    problems = []
    region = settings.aws.get("region")
    if not region:
        problems.append(f"{where} region is required: the AWS region the environment's resources are in")
    if boto3.Session(region_name=str(region or "us-east-1")).get_credentials() is None:
        problems.append(
            "no AWS credentials: in GitHub Actions the deploy workflow assumes the environment's OIDC role "
            "(docs/production.md); elsewhere set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return problems


def platform_for(
    environment: str | PlatformSettings | None = None, *, home: Path | None = None, config: Path | None = None
) -> Platform:
    """The ``Platform`` of an environment (default ``MANGAASSIST_ENV`` or ``dev``)."""
    if isinstance(environment, PlatformSettings):
        return Platform(environment, config)
    path = config or find_config()
    return Platform(load_settings(environment, path, home), path)


WORKLOAD_AWS_ENV = "MANGAASSIST_AWS_SETTINGS"
"""The aws settings a workload's own stores need, as JSON (``workload_aws_settings``): set by the
``Compute`` that starts it on AWS, read by ``workload_platform``."""
WORKLOAD_AWS_KEYS = (
    "region",
    "endpoint_url",
    "opensearch_url",
    "appconfig_application",
    "metrics_namespace",
    "embedding_model",
    "embedding_dimensions",
)
"""What a worker's tables (DynamoDB), knowledge index (OpenSearch), config (AppConfig), metrics and
embedder read of ``[environments.NAME.aws]``: nothing secret, nothing about deploying."""


def workload_aws_settings(aws: Mapping[str, Any]) -> dict[str, str]:
    """``{MANGAASSIST_AWS_SETTINGS: JSON}`` of the ``WORKLOAD_AWS_KEYS`` an environment sets, for a
    workload's environment variables (empty when it sets none)."""
    chosen = {k: aws[k] for k in WORKLOAD_AWS_KEYS if aws.get(k) not in (None, "")}
    return {WORKLOAD_AWS_ENV: json.dumps(chosen, sort_keys=True)} if chosen else {}


def workload_platform(home: Path, root: Path) -> Platform:
    """The platform a running workload (a chatbot worker) reads its stores from.

    A worker may run from an unpacked artifact or an image with no ``mangaassist.toml`` above it:
    its provider comes from ``MANGAASSIST_PROVIDER`` (set by the platform that started it; default
    ``local``), its state directory is given, and on AWS its settings come from
    ``MANGAASSIST_AWS_SETTINGS`` (``workload_aws_settings``; a malformed value is a ``ConfigError``
    naming it)."""
    provider = os.environ.get("MANGAASSIST_PROVIDER") or "local"
    environment = os.environ.get("MANGAASSIST_ENV") or "dev"
    raw = os.environ.get(WORKLOAD_AWS_ENV, "").strip()
    aws: dict[str, Any] = {}
    if raw:
        try:
            aws = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{WORKLOAD_AWS_ENV}: not JSON ({exc})") from None
        if not isinstance(aws, dict) or set(aws) - set(WORKLOAD_AWS_KEYS):
            unknown = sorted(set(aws) - set(WORKLOAD_AWS_KEYS)) if isinstance(aws, dict) else aws
            raise ConfigError(
                f"{WORKLOAD_AWS_ENV}: expected an object of {', '.join(WORKLOAD_AWS_KEYS)}; "
                f"unknown: {unknown}"
            )
    return Platform(
        PlatformSettings(
            environment=environment,
            provider=provider,
            root=root,
            home=home,
            control_port=0,
            services={},
            aws=aws,
        )
    )


@contextmanager
def opened(environment: str | None = None, *, home: Path | None = None) -> Iterator[Platform]:
    """``platform_for`` as a context manager: its resources are closed at the end."""
    platform = platform_for(environment, home=home)
    try:
        yield platform
    finally:
        platform.close()


# -- the engine's audit log in AWS (``delivery.engine.anchor``, ``delivery.engine.audit``) ------------


def _engine_client(service: str, what: str, region: str | None = None) -> Any:
    """A boto3 client for the engine's own use (not an environment's): ``MANGAASSIST_AWS_ENDPOINT_URL``
    if set, else boto3's resolution."""
    try:
        import boto3
    except ImportError:
        raise ConfigError(f"{what} needs boto3: install mangaassist[aws]") from None
    from botocore.exceptions import BotoCoreError

    make: Any = boto3.client  # typed per service name by boto3-stubs; the name is a variable here
    endpoint = os.environ.get(AWS_ENDPOINT_ENV, "").strip() or None
    try:
        return make(service, endpoint_url=endpoint, region_name=region)
    except (BotoCoreError, ValueError) as exc:  # no region, a malformed endpoint
        raise ConfigError(f"{what}: cannot make the {service} client: {exc}") from None


def audit_anchor(url: str, *, retention_days: int) -> S3AuditAnchor:
    """The audit anchor ``s3://BUCKET/PREFIX`` (``platform.aws.audit.S3AuditAnchor``), its bucket
    checked for Object Lock (refused without it) before it is returned."""
    from mangaassist.platform.aws.audit import S3AuditAnchor, parse_s3_url

    bucket, prefix = parse_s3_url(url)
    s3 = _engine_client("s3", f"MANGAASSIST_AUDIT_ANCHOR={url}")
    anchor = S3AuditAnchor(s3, bucket=bucket, prefix=prefix, retention_days=retention_days)
    anchor.check()
    return anchor


def sts_client() -> Any:
    """The STS client that tells who the AWS caller is (``delivery.engine.people.aws_actor``):
    ``MANGAASSIST_AWS_ENDPOINT_URL`` if set, else boto3's resolution."""
    return _engine_client("sts", "the AWS caller identity")


def audit_key(secret_id: str) -> bytes:
    """The audit key held by the Secrets Manager secret ``secret_id`` (ARN or name; its region is the
    ARN's, else boto3's), 32 bytes (``platform.aws.audit.secrets_manager_key``)."""
    from mangaassist.platform.aws.audit import secret_region, secrets_manager_key

    client = _engine_client("secretsmanager", f"the audit key secret {secret_id}", secret_region(secret_id))
    try:
        return secrets_manager_key(client, secret_id)
    finally:
        client.close()
