"""Prometheus and Alertmanager on the local platform (CD-08), run by the control plane.

When an environment has a ``[environments.NAME.monitoring]`` table, the control plane starts, on
127.0.0.1:

* **Prometheus** (Debian's ``prometheus``), scraping every router (``/_router/metrics``, per-revision
  series) and every ready worker (``/metrics``, labelled with its service and revision) through a
  file-based service discovery file the control plane rewrites whenever a routing table changes
  (``HOME/monitoring/targets/platform.json``; another process serving metrics, the delivery
  dashboard, drops its own file there), and evaluating the rule files under
  ``HOME/monitoring/rules/`` (what ``mangaassist monitor build`` generates; the CD-08 pipeline
  writes them there and reloads with ``POST /-/reload``);
* **Alertmanager** (Debian's ``prometheus-alertmanager``), routing every alert to the control
  plane's webhook ``POST /v1/alerts``. The control plane keeps the firing alerts (``AlertBook``),
  appends every notification to ``HOME/monitoring/alerts.jsonl`` and serves them on
  ``GET /v1/alerts``, which the ``Metrics`` provider reads so that a page alert for a service fails
  its rollout phase and keeps a new deploy from starting.

Both are children of the control plane, stopped with it (``mangaassist down``). A binary that is
not installed is reported (with the apt command) and the platform runs on without it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from mangaassist.platform.settings import MonitoringSettings

log = logging.getLogger("mangaassist.platform")

INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager"
READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class AlertBook:
    """The alerts Alertmanager delivered: firing ones by fingerprint, every notification on disk."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self._firing: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def receive(self, payload: Mapping[str, Any]) -> int:
        """An Alertmanager webhook notification (version 4); returns how many alerts it carried."""
        alerts = payload.get("alerts")
        if not isinstance(alerts, list):
            raise ValueError("an Alertmanager notification has an 'alerts' list")
        now = time.time()
        with self._lock:
            for alert in alerts:
                if not isinstance(alert, dict):
                    continue
                labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
                key = str(alert.get("fingerprint") or json.dumps(labels, sort_keys=True))
                if alert.get("status") == "firing":
                    self._firing[key] = {
                        "name": labels.get("alertname", "?"),
                        "labels": labels,
                        "annotations": dict(alert.get("annotations") or {}),
                        "starts_at": alert.get("startsAt"),
                        "received_at": now,
                    }
                else:
                    self._firing.pop(key, None)
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with self.journal.open("a") as out:
                for alert in alerts:
                    if isinstance(alert, dict):
                        out.write(json.dumps({"at": now, **alert}, sort_keys=True) + "\n")
        return len(alerts)

    def firing(self, service: str | None = None) -> list[dict[str, Any]]:
        """Firing alerts, of ``service`` only when given (label ``sloth_service`` or ``service``)."""
        with self._lock:
            alerts = list(self._firing.values())
        if service is None:
            return alerts
        return [
            a for a in alerts if service in (a["labels"].get("sloth_service"), a["labels"].get("service"))
        ]


class LocalMonitoring:
    """Prometheus and Alertmanager for one environment, children of the control plane."""

    def __init__(self, settings: MonitoringSettings, home: Path, run_dir: Path, control_url: str) -> None:
        self.settings = settings
        self.dir = home / "monitoring"
        self.run_dir = run_dir
        self.control_url = control_url
        self.rules_dir = self.dir / "rules"
        self.targets_file = self.dir / "targets" / "platform.json"
        self.alerts = AlertBook(self.dir / "alerts.jsonl")
        self.prometheus_url = ""
        self.alertmanager_url = ""
        self.problems: list[str] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- configuration -------------------------------------------------------------------------------

    def prometheus_config(self, alertmanager_port: int) -> dict[str, Any]:
        interval = f"{self.settings.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.rules_dir / "*.yml"), str(self.rules_dir / "*.yaml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "mangaassist",
                    "honor_labels": True,  # the routers' own service and revision labels win
                    # the control plane's file, and any other process's (the dashboard's engine metrics)
                    "file_sd_configs": [
                        {"files": [str(self.targets_file.parent / "*.json")], "refresh_interval": interval}
                    ],
                },
            ],
        }

    def alertmanager_config(self) -> dict[str, Any]:
        return {
            "route": {
                "receiver": "control-plane",
                "group_by": ["alertname", "sloth_service", "sloth_slo", "sloth_severity"],
                "group_wait": "1s",
                "group_interval": "5s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "control-plane",
                    "webhook_configs": [{"url": f"{self.control_url}/v1/alerts", "send_resolved": True}],
                }
            ],
        }

    def write_targets(self, groups: Iterable[Mapping[str, Any]]) -> None:
        """The file Prometheus discovers its targets in (``[{targets, labels}]``), replaced atomically."""
        _write(self.targets_file, json.dumps(list(groups), indent=1, sort_keys=True))

    # -- life ------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        binary = shutil.which(argv[0])
        if binary is None:
            self.problems.append(f"{argv[0]} is not installed ({INSTALL_HINT}); running without it")
            log.warning("%s", self.problems[-1])
            return
        log_path = self.run_dir / f"{name}.log"
        with log_path.open("ab") as out:
            self._procs[name] = subprocess.Popen(
                [binary, *argv[1:]], stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )  # same process group as the control plane: stopped with it even if it is killed

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.write_targets([])
        am_port = self.settings.alertmanager_port or _free_port()
        prom_port = self.settings.prometheus_port or _free_port()
        _write(self.dir / "alertmanager.yml", yaml.safe_dump(self.alertmanager_config(), sort_keys=False))
        _write(self.dir / "prometheus.yml", yaml.safe_dump(self.prometheus_config(am_port), sort_keys=False))
        self._spawn(
            "alertmanager",
            [
                self.settings.alertmanager,
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
        )
        self._spawn(
            "prometheus",
            [
                self.settings.prometheus,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--web.enable-lifecycle",
                # resend firing alerts every interval (default 1m): a notification dropped while a
                # reload rediscovers Alertmanager would otherwise wait a minute
                f"--rules.alert.resend-delay={max(1.0, self.settings.scrape_interval_s):g}s",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            ],
        )
        if "alertmanager" in self._procs:
            self.alertmanager_url = f"http://127.0.0.1:{am_port}"
        if "prometheus" in self._procs:
            self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        for name, url in (("prometheus", self.prometheus_url), ("alertmanager", self.alertmanager_url)):
            if url and not self._wait_ready(name, url):
                self.problems.append(f"{name} did not become ready at {url} (see {self.run_dir / name}.log)")
                log.warning("%s", self.problems[-1])

    def _wait_ready(self, name: str, url: str) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def reload(self) -> None:
        """Prometheus re-reads its configuration and rule files (``POST /-/reload``)."""
        if self.prometheus_url:
            httpx.post(f"{self.prometheus_url}/-/reload", timeout=10.0).raise_for_status()

    def stop(self) -> None:
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            self._procs.pop(name, None)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.poll() is None]

    def status(self) -> dict[str, Any]:
        return {
            "prometheus": self.prometheus_url or None,
            "alertmanager": self.alertmanager_url or None,
            "rules": str(self.rules_dir),
            "targets": str(self.targets_file),
            "running": {name: proc.poll() is None for name, proc in self._procs.items()},
            "problems": list(self.problems),
            "firing": len(self.alerts.firing()),
        }


class LocalRuleHost:
    """Where CD-08 installs rule files on the local platform, and the Prometheus that loads them
    (``platform.monitoring.RuleHost``). The Prometheus URL is read from the control plane's runtime
    file; None when the platform (or its monitoring) is not running."""

    def __init__(self, home: Path, run_dir: Path) -> None:
        self.rules_dir = home / "monitoring" / "rules"
        self.dashboards_dir = home / "monitoring" / "dashboards"
        self._runtime = run_dir / "controlplane.json"

    def url(self) -> str | None:
        try:
            runtime = json.loads(self._runtime.read_text())
        except (OSError, ValueError):
            return None
        url = runtime.get("prometheus")
        if not url:
            return None
        try:
            if httpx.get(f"{url}/-/ready", timeout=2.0).status_code != 200:
                return None
        except httpx.HTTPError:
            return None
        return str(url)

    def reload(self) -> None:
        url = self.url()
        if url:
            httpx.post(f"{url}/-/reload", timeout=30.0).raise_for_status()

    def groups(self) -> list[dict[str, Any]]:
        url = self.url()
        if not url:
            return []
        data = httpx.get(f"{url}/api/v1/rules", timeout=10.0).json()
        return list(data.get("data", {}).get("groups", []))
