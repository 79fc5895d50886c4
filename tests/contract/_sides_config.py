"""The two sides of the ``ConfigStore`` contract (``test_config_store_contract.py``).

``local``: ``HttpConfigStore`` clients of a real config server process
(``python -m mangaassist.platform.local.config_server``) on a SQLite file under a temporary home.
Workers report observations as the chatbot's ``config_client`` does (``POST /v1/observations``).

``aws``: ``AppConfigStore`` with boto3 clients of moto's server process. moto 5 implements part of
AppConfig's control plane and none of its data plane, so the calls split:

* on moto: ``CreateApplication``, ``CreateConfigurationProfile``, ``ListConfigurationProfiles``,
  ``CreateHostedConfigurationVersion``, ``GetHostedConfigurationVersion``,
  ``DeleteHostedConfigurationVersion``; and CloudWatch's ``PutMetricData`` (how a worker reports,
  with ``config_appconfig.metric_data``), ``ListMetrics`` and ``GetMetricData``;
* answered by ``AppConfigShim``, because moto answers 404 (not implemented) or 500 (a moto bug):
  ``ListApplications`` (500), ``ListEnvironments``/``CreateEnvironment``,
  ``ListDeploymentStrategies``/``CreateDeploymentStrategy``, ``StartDeployment``/``GetDeployment``
  (404), ``ListHostedConfigurationVersions`` (500), and ``appconfigdata``'s
  ``StartConfigurationSession``/``GetLatestConfiguration`` (no such service in moto).

The shim is not a ``Stubber`` queue (the contract's assertions are the same on both sides, so the
order and number of calls are the provider's business, not a script's): it hooks botocore's own
``before-parameter-build``/``before-call`` events of those operations only, as ``Stubber`` does,
so botocore still validates every request against the service model, and the shim's answers are
validated against the operations' output shapes. Its state is small and derived from moto's:
applications and hosted versions are recorded from moto's answers to their ``Create`` calls
(``after-call``), deployment strategies and environments are kept by the shim, a deployment is
all-at-once (``DEPLOYING`` when started, ``COMPLETE`` at the first ``GetDeployment``), and the data
API serves the content of the hosted version the last completed deployment named, read from moto
with ``GetHostedConfigurationVersion``. A profile with nothing deployed is
``ResourceNotFoundException``; an unchanged configuration is an empty body; a token is usable once.
Not modelled: ``LatestVersionNumber`` (moto ignores it too), deployment conflicts and bakes, the
minimum poll interval being enforced.
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from uuid import uuid4

import httpx
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.response import StreamingBody
from botocore.validate import validate_parameters

from mangaassist.platform.aws.config_appconfig import NAMESPACE, AppConfigStore, metric_data
from mangaassist.platform.config_store import ConfigStore, Observations
from mangaassist.platform.local.config_server import HttpConfigStore
from tests.moto_server import client

Answer = tuple[AWSResponse, dict[str, Any]]


class ConfigSide(Protocol):
    name: str

    def store(self) -> ConfigStore:
        """A new client of the side's store (a writer, or a worker reading what is served)."""
        ...

    def report(self, profile: str, version: str, observed: Observations) -> None:
        """What one worker reports of the sessions it served on ``version``."""
        ...


# -- local: the real config server -----------------------------------------------------------------


@contextmanager
def config_server(home: Path) -> Iterator[str]:
    """The config server as its own process on a free port: yields its URL."""
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "config-server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mangaassist.platform.local.config_server", "--home", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = str(json.loads((home / "config-server.json").read_text())["url"])
                httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                break
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                assert proc.poll() is None, f"the config server exited with {proc.returncode}"
                assert time.monotonic() < deadline, "the config server did not answer within 30 s"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class LocalConfigSide:
    url: str
    name: str = "local"
    opened: list[HttpConfigStore] = field(default_factory=list)

    def store(self) -> ConfigStore:
        made = HttpConfigStore(self.url)
        self.opened.append(made)
        return made

    def report(self, profile: str, version: str, observed: Observations) -> None:
        body = {profile: {version: observed.as_dict()}}
        httpx.post(f"{self.url}/v1/observations", json=body, timeout=5).raise_for_status()

    def close(self) -> None:
        for made in self.opened:
            made.close()


# -- aws: moto's server and the shim ---------------------------------------------------------------


def _now_utc() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class AppConfigShim:
    """Answers the AppConfig operations moto lacks (module docstring); one per moto server."""

    CONTROL = (
        "ListApplications",
        "ListEnvironments",
        "CreateEnvironment",
        "ListDeploymentStrategies",
        "CreateDeploymentStrategy",
        "ListHostedConfigurationVersions",
        "StartDeployment",
        "GetDeployment",
    )
    DATA = ("StartConfigurationSession", "GetLatestConfiguration")

    def __init__(self, endpoint: str) -> None:
        self.moto = client(endpoint, "appconfig")  # no shim: what moto holds
        self.applications: dict[str, str] = {}  # id -> name
        self.environments: dict[str, dict[str, str]] = {}  # application id -> name -> id
        self.strategies: dict[str, str] = {}  # name -> id
        self.hosted: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.deployments: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.deployed: dict[tuple[str, str, str], int] = {}  # (app, env, profile id) -> version
        self.sessions: dict[str, dict[str, Any]] = {}
        self.answered: dict[str, int] = {}
        self._ids = itertools.count(1)

    def install(self, boto_client: Any) -> Any:
        service = boto_client.meta.service_model.service_name
        events = boto_client.meta.events
        for operation in self.CONTROL if service == "appconfig" else self.DATA:
            events.register(f"before-parameter-build.{service}.{operation}", self._keep_params)
            events.register(f"before-call.{service}.{operation}", self._answer)
        if service == "appconfig":
            events.register("after-call.appconfig.CreateApplication", self._created_application)
            events.register("after-call.appconfig.CreateHostedConfigurationVersion", self._created_version)
            events.register("after-call.appconfig.DeleteHostedConfigurationVersion", self._deleted_version)
        return boto_client

    # -- botocore hooks

    @staticmethod
    def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["shim_params"] = dict(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> Answer:
        name = model.name
        self.answered[name] = self.answered.get(name, 0) + 1
        try:
            body = getattr(self, f"_{name}")(context["shim_params"])
        except _Refused as refused:
            error = {"Code": refused.code, "Message": refused.message}
            return _http(refused.status), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": refused.status},
            }
        if model.output_shape is not None:
            validate_parameters(
                {k: v for k, v in body.items() if not isinstance(v, StreamingBody)}, model.output_shape
            )
        return _http(200), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}

    def _created_application(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Id" in parsed:
            self.applications[str(parsed["Id"])] = str(parsed["Name"])

    def _created_version(self, parsed: dict[str, Any], **_: Any) -> None:
        if "VersionNumber" not in parsed:
            return
        item: dict[str, Any] = {
            k: parsed[k]
            for k in (
                "ApplicationId",
                "ConfigurationProfileId",
                "VersionNumber",
                "Description",
                "ContentType",
            )
            if k in parsed
        }
        if parsed.get("VersionLabel"):
            item["VersionLabel"] = parsed["VersionLabel"]
        key = (str(parsed["ApplicationId"]), str(parsed["ConfigurationProfileId"]))
        self.hosted.setdefault(key, {})[int(parsed["VersionNumber"])] = item

    def _deleted_version(self, http_response: Any, context: dict[str, Any], **_: Any) -> None:
        params = context.get("shim_delete") or {}
        if http_response.status_code < 300 and params:
            key = (str(params["ApplicationId"]), str(params["ConfigurationProfileId"]))
            self.hosted.get(key, {}).pop(int(params["VersionNumber"]), None)

    def remember_deletes(self, boto_client: Any) -> None:
        boto_client.meta.events.register(
            "before-parameter-build.appconfig.DeleteHostedConfigurationVersion",
            lambda params, context, **_: context.__setitem__("shim_delete", dict(params)),
        )

    # -- the control plane

    def _new_id(self) -> str:
        return f"{next(self._ids):07x}"

    def _ListApplications(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Items": [{"Id": i, "Name": n} for i, n in self.applications.items()]}

    def _app(self, application_id: str) -> str:
        if application_id not in self.applications:
            raise _Refused("ResourceNotFoundException", f"Application {application_id} not found", 404)
        return application_id

    def _ListEnvironments(self, p: dict[str, Any]) -> dict[str, Any]:
        app = self._app(p["ApplicationId"])
        envs = self.environments.get(app, {})
        return {
            "Items": [
                {"ApplicationId": app, "Id": i, "Name": n, "State": "ReadyForDeployment"}
                for n, i in envs.items()
            ]
        }

    def _CreateEnvironment(self, p: dict[str, Any]) -> dict[str, Any]:
        app = self._app(p["ApplicationId"])
        env = self.environments.setdefault(app, {}).setdefault(p["Name"], self._new_id())
        return {"ApplicationId": app, "Id": env, "Name": p["Name"], "State": "ReadyForDeployment"}

    def _ListDeploymentStrategies(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Items": [{"Id": i, "Name": n} for n, i in self.strategies.items()]}

    def _CreateDeploymentStrategy(self, p: dict[str, Any]) -> dict[str, Any]:
        assert (p["DeploymentDurationInMinutes"], p["GrowthFactor"], p["FinalBakeTimeInMinutes"]) == (
            0,
            100,
            0,
        )
        strategy = self.strategies.setdefault(p["Name"], self._new_id())
        return {"Id": strategy, "Name": p["Name"], "GrowthFactor": 100.0, "DeploymentDurationInMinutes": 0}

    def _ListHostedConfigurationVersions(self, p: dict[str, Any]) -> dict[str, Any]:
        items = self.hosted.get((p["ApplicationId"], p["ConfigurationProfileId"]), {})
        label = p.get("VersionLabel")

        def wanted(item: dict[str, Any]) -> bool:
            if label is None:
                return True
            have = str(item.get("VersionLabel", ""))
            return have.startswith(label[:-1]) if label.endswith("*") else have == label

        return {"Items": [dict(i) for _, i in sorted(items.items(), reverse=True) if wanted(i)]}

    def _StartDeployment(self, p: dict[str, Any]) -> dict[str, Any]:
        app = self._app(p["ApplicationId"])
        if p["EnvironmentId"] not in self.environments.get(app, {}).values():
            raise _Refused("ResourceNotFoundException", f"Environment {p['EnvironmentId']} not found", 404)
        if p["DeploymentStrategyId"] not in self.strategies.values():
            raise _Refused("ResourceNotFoundException", "Deployment strategy not found", 404)
        # the hosted version must exist on moto (raises ResourceNotFoundException otherwise)
        self.moto.get_hosted_configuration_version(
            ApplicationId=app,
            ConfigurationProfileId=p["ConfigurationProfileId"],
            VersionNumber=int(p["ConfigurationVersion"]),
        )
        runs = self.deployments.setdefault((app, p["EnvironmentId"]), [])
        deployment = {
            "ApplicationId": app,
            "EnvironmentId": p["EnvironmentId"],
            "DeploymentStrategyId": p["DeploymentStrategyId"],
            "ConfigurationProfileId": p["ConfigurationProfileId"],
            "DeploymentNumber": len(runs) + 1,
            "ConfigurationVersion": p["ConfigurationVersion"],
            "Description": p.get("Description", ""),
            "DeploymentDurationInMinutes": 0,
            "GrowthFactor": 100.0,
            "FinalBakeTimeInMinutes": 0,
            "State": "DEPLOYING",
        }
        runs.append(deployment)
        return dict(deployment)

    def _GetDeployment(self, p: dict[str, Any]) -> dict[str, Any]:
        runs = self.deployments.get((p["ApplicationId"], p["EnvironmentId"]), [])
        if not 1 <= p["DeploymentNumber"] <= len(runs):
            raise _Refused("ResourceNotFoundException", "Deployment not found", 404)
        deployment = runs[p["DeploymentNumber"] - 1]
        if deployment["State"] != "COMPLETE":  # all at once, no bake
            deployment.update(State="COMPLETE", PercentageComplete=100.0)
            key = (
                deployment["ApplicationId"],
                deployment["EnvironmentId"],
                deployment["ConfigurationProfileId"],
            )
            self.deployed[key] = int(deployment["ConfigurationVersion"])
        return dict(deployment)

    # -- the data plane

    def _resolve(self, p: dict[str, Any]) -> tuple[str, str, str]:
        wanted_app = p["ApplicationIdentifier"]
        app = next((i for i, n in self.applications.items() if wanted_app in (i, n)), None)
        if app is None:
            raise _Refused("ResourceNotFoundException", f"Application {wanted_app} not found", 404)
        env = next(
            (i for n, i in self.environments.get(app, {}).items() if p["EnvironmentIdentifier"] in (i, n)),
            None,
        )
        profiles = self.moto.list_configuration_profiles(ApplicationId=app)["Items"]
        wanted = p["ConfigurationProfileIdentifier"]
        profile = next((str(x["Id"]) for x in profiles if wanted in (x["Id"], x["Name"])), None)
        if env is None or profile is None:
            raise _Refused("ResourceNotFoundException", "Environment or configuration profile not found", 404)
        return app, env, profile

    def _StartConfigurationSession(self, p: dict[str, Any]) -> dict[str, Any]:
        app, env, profile = self._resolve(p)
        token = uuid4().hex
        interval = int(p.get("RequiredMinimumPollIntervalInSeconds", 60))
        self.sessions[token] = {"key": (app, env, profile), "served": None, "interval": interval}
        return {"InitialConfigurationToken": token}

    def _GetLatestConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.pop(p["ConfigurationToken"], None)
        if session is None:
            raise _Refused("BadRequestException", "The token is not valid (used already?)", 400)
        app, env, profile = session["key"]
        number = self.deployed.get((app, env, profile))
        if number is None:
            raise _Refused("ResourceNotFoundException", "No deployment of this configuration profile", 404)
        data = b""
        if number != session["served"]:
            got = self.moto.get_hosted_configuration_version(
                ApplicationId=app, ConfigurationProfileId=profile, VersionNumber=number
            )
            data = got["Content"].read()
        token = uuid4().hex
        self.sessions[token] = {**session, "served": number}
        return {
            "NextPollConfigurationToken": token,
            "NextPollIntervalInSeconds": session["interval"],
            "ContentType": "application/json",
            "Configuration": StreamingBody(io.BytesIO(data), len(data)),
        }


def _http(status: int) -> AWSResponse:
    """The HTTP response behind a shim's answer (what ``Stubber`` makes too)."""
    return AWSResponse("", status, HTTPHeaders(), None)


class _Refused(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class AwsConfigSide:
    """``AppConfigStore`` instances sharing one application and environment on moto's server and
    the shim; the clients are shared, each ``store()`` has its own caches and data-API sessions."""

    endpoint: str
    shim: AppConfigShim
    application: str = field(default_factory=lambda: f"ma-contract-{uuid4().hex[:6]}")
    name: str = "aws"

    def __post_init__(self) -> None:
        self.appconfig = self.shim.install(client(self.endpoint, "appconfig"))
        self.shim.remember_deletes(self.appconfig)
        self.data = self.shim.install(client(self.endpoint, "appconfigdata"))
        self.cloudwatch = client(self.endpoint, "cloudwatch")
        self.since = _now_utc()

    def store(self) -> ConfigStore:
        return AppConfigStore(
            self.appconfig,
            self.data,
            self.cloudwatch,
            application=self.application,
            environment="contract",
            since=self.since,
            sleep=lambda _s: None,  # the shim's deployments complete at the first GetDeployment
        )

    def report(self, profile: str, version: str, observed: Observations) -> None:
        self.cloudwatch.put_metric_data(
            Namespace=NAMESPACE, MetricData=metric_data(profile, version, observed)
        )
