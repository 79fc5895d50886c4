"""The model segment of ``make demo`` (CD-03): retrain with more data, shadow, canary, promoted;
a deliberately bad model blocked by the evaluation gate.

Runs on the local platform the release segment started (the chatbot and ``intent-model`` up), with
users on both routers all along: chat conversations through the chatbot (which asks the model's
router) and direct intent requests on the model's router (``ModelUsers``, which records which
revision and model version answered each one).

1. **A fresh registry.** MLflow's store under ``HOME/demo-model`` (removed first, so every demo starts
   from version 1), named by each deploy's ``tracking_uri`` run param (the environment is untouched);
   the model config is ``ml/intent.yaml`` under the name ``intent-demo``. The name matters: the
   pipeline downloads packages to ``HOME/models/packages/<name>-v<N>`` and reuses a download that
   exists, so a demo registry named ``intent`` would put its version 1 where a real registry's
   version 1 is looked for. The demo's own ``intent-demo-v*`` downloads are removed with it.
2. **The first champion.** ``v1`` is trained on a 70% stratified subset and deployed through the
   pipeline like any model: no champion yet, so the gate checks the absolute limits and the shadow
   compares it with the built-in model that ``r1`` serves; promoted, it is the champion. The next
   two versions train in a background thread meanwhile (the deploy mostly waits for a process to
   start and for traffic to judge), so their training does not add to the segment's time.
3. **Retrain with more data.** ``v2`` on all of the training set: the gate's table side by side
   (v1 against v2), the shadow's numbers (mirrored requests, agreement, p99, a few disagreements),
   each canary verdict, the promotion; the ``champion`` alias now names v2, ``previous`` v1.
4. **A bad model.** ``v3`` trained on shuffled labels: the gate FAILs (the failing rows printed),
   the run stops before anything is deployed: no new revision, the champion stays v2.

Settings are demo-sized (``DEMO_MODEL_SETTINGS``: 50 shadow comparisons, canary 50% then 100%, short
steps and drain); about 60-90 s with MiniLM on a 2-core machine. Called by ``mangaassist demo``
after ``run_release_demo``, before the platform stops; returns the number of failed checks. The
compute and the registry come from ``platform.factory`` (``Platform.compute``, ``tracking_registry``).
``benchmarks/model_deploy.py`` uses ``ModelUsers`` and ``Trainer`` too, and the CD-03 tests on a real
platform (``tests/integration/model_pipeline``) use ``ModelUsers`` as their users.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from mangaassist.chatbot.catalog import Catalog
from mangaassist.chatbot.embeddings import Embedder, make_embedder
from mangaassist.chatbot.intent_training import TrainingConfig, train_candidate
from mangaassist.chatbot.settings import Settings, find_root
from mangaassist.delivery.engine.model import RunRecord, RunState, StepRecord
from mangaassist.delivery.pipelines import model as cd03
from mangaassist.delivery.rollout.load import BackgroundLoad, check_loopback
from mangaassist.demo.engine import DEMO_ENVIRONMENT
from mangaassist.demo.release import _judge_table
from mangaassist.platform.compute import Compute
from mangaassist.platform.factory import Platform, platform_for
from mangaassist.platform.model_registry import ModelRegistry, TrackingRegistry
from mangaassist.views.progress import ProgressDisplay
from mangaassist.views.runs import run_pipeline

DEMO_MODEL = "intent-demo"
"""The demo's registered model: not ``intent``, so its package downloads never stand in for a real one's."""

DEMO_MODEL_SETTINGS: dict[str, Any] = {
    "shadow_min_requests": 50,
    "shadow_max_s": 60,
    # two model revisions, the chatbot and the demo's users share two cores: the shadow's latency
    # check is kept for real regressions (a model 100 times slower), not the machine's load
    "shadow_p99_budget_ms": 1000,
    "steps": "50,100",
    "min_requests": 30,
    "judge_min_requests": 10,
    "max_step_s": 40,
    "on_inconclusive": "rollback",
    "drain_idle_s": 0.5,
    "drain_max_s": 10,
}
"""Run params of the demo's deploys (over ``[environments.dev.model_deploy]`` / ``model_shadow``)."""


# -- users of the model endpoint -------------------------------------------------------------------


@dataclass
class ModelUsers:
    """Users of the model's router: ``rps`` intent requests a second (the eval set's texts), five per
    conversation, each answer recorded from the client's side: status, the revision that served it
    (``X-MangaAssist-Revision``) and the model version (``X-Model-Version``). Loopback only."""

    url: str
    rps: float = 10.0
    texts: tuple[str, ...] = ()
    answers: list[tuple[int, str, str]] = field(default_factory=list)
    tag: str = field(default_factory=lambda: f"user-{time.monotonic_ns()}")
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ModelUsers:
        check_loopback(self.url)
        if not self.texts:
            eval_path = find_root() / "ml" / "intents" / "eval.jsonl"
            lines = eval_path.read_text(encoding="utf-8").splitlines()
            self.texts = tuple(json.loads(line)["text"] for line in lines if line.strip())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    r = client.post(
                        "/v1/intent",
                        json={"text": self.texts[i % len(self.texts)]},
                        headers={"X-Session-Id": f"{self.tag}-{i // 5}"},
                    )
                    self.answers.append(
                        (
                            r.status_code,
                            r.headers.get("X-MangaAssist-Revision", ""),
                            r.headers.get("X-Model-Version", ""),
                        )
                    )
                except httpx.HTTPError:
                    self.answers.append((0, "", ""))
                i += 1
                self._stop.wait(max(0.0, 1 / self.rps - (time.monotonic() - began)))

    def stop(self) -> list[tuple[int, str, str]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        return list(self.answers)

    def mark(self) -> int:
        """A position in the answers, for ``since``."""
        return len(self.answers)

    def since(self, mark: int) -> list[tuple[int, str, str]]:
        return list(self.answers[mark:])


# -- the demo's registry ---------------------------------------------------------------------------


@contextlib.contextmanager
def demo_registry(home: Path, name: str = DEMO_MODEL) -> Iterator[tuple[Path, TrackingRegistry]]:
    """A fresh MLflow registry under ``home/demo-model`` and a model config naming ``name``.

    The demo's deploys name it with their ``tracking_uri`` param (the factory opens that store:
    ``Platform.tracking_registry``); nothing is written to the environment. Removed first: the
    demo's own earlier registry and its package downloads under ``home/models/packages/<name>-v*``."""
    directory = home / "demo-model"
    shutil.rmtree(directory, ignore_errors=True)
    packages = home / "models" / "packages"
    if packages.is_dir():
        for old in packages.glob(f"{name}-v*"):
            shutil.rmtree(old, ignore_errors=True)
    # a new path each time: MLflow keeps one database engine per tracking URI for the process, and
    # an engine of a removed file would still show the previous demo's versions
    store = directory / f"registry-{time.time_ns()}"
    store.mkdir(parents=True)
    root = find_root()
    raw = yaml.safe_load((root / "ml" / "intent.yaml").read_text(encoding="utf-8"))
    raw["model"] = name
    config_path = directory / "intent.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    platform = platform_for(DEMO_ENVIRONMENT, home=home)
    try:
        yield config_path, platform.tracking_registry(f"sqlite:///{(store / 'mlflow.db').resolve()}")
    finally:
        platform.close()


@dataclass
class Trainer:
    """Trains variants of the demo's model config into its registry (one embedder, loaded once)."""

    config_path: Path
    registry: TrackingRegistry
    embedder: Embedder | None = None
    catalog: Catalog | None = None

    def train(
        self, reason: str, *, fraction: float | None = None, shuffled: bool = False
    ) -> tuple[str, float]:
        """Train, track and register a version (it gets ``candidate``): (version, seconds)."""
        settings = Settings.from_env()
        if self.embedder is None:
            self.embedder = make_embedder(settings.embedder)
        if self.catalog is None:
            self.catalog = Catalog.load(settings.catalog_path)
        config = TrainingConfig.load(self.config_path, find_root()).with_overrides(
            train_fraction=fraction, shuffle_labels=shuffled or None
        )
        began = time.monotonic()
        found = train_candidate(
            config, self.registry, self.embedder, self.catalog, actor="demo", reason=reason
        )
        return found.version.version, time.monotonic() - began


def deploy_version(
    console: Console,
    config_path: Path,
    registry: TrackingRegistry,
    version: str,
    overrides: dict[str, str] | None = None,
    **params: Any,
) -> tuple[RunRecord, dict[str, StepRecord], float]:
    """``mangaassist deploy model`` of ``version`` in ``dev`` with the demo's settings:
    (run, steps, seconds from start to the run's end)."""
    began = time.monotonic()
    run, steps = run_pipeline(
        ProgressDisplay(console),
        cd03.NAME,
        {
            "environment": DEMO_ENVIRONMENT,
            "model_config": str(config_path),
            "tracking_uri": registry.tracking_uri,
            "version": version,
            **DEMO_MODEL_SETTINGS,
            **params,
        },
        environment=DEMO_ENVIRONMENT,
        overrides=overrides,
        announce=True,
    )
    return run, steps, time.monotonic() - began


# -- the segment -----------------------------------------------------------------------------------


def run_model_demo(console: Console, platform: Platform | None = None) -> int:
    """The CD-03 segment on the running local platform; returns the number of failed checks."""
    with contextlib.ExitStack() as stack:
        if platform is None:
            platform = stack.enter_context(platform_for(DEMO_ENVIRONMENT))
        return _model_segment(console, platform)


def _model_segment(console: Console, platform: Platform) -> int:
    console.rule("[bold]CD-03: the intent model, retrained, shadowed, canaried, promoted")
    started = time.monotonic()
    compute = platform.compute()
    failures = 0

    def check(ok: bool, what: str) -> None:
        nonlocal failures
        if not ok:
            failures += 1
            console.print(f"[bold red]check failed:[/] {what}", highlight=False)

    chat = BackgroundLoad(compute.url("chatbot"), rps=6, sessions=6, seed=11).start()
    users = ModelUsers(compute.url(cd03.SERVICE), rps=10).start()
    try:
        with (
            demo_registry(platform.home) as (config_path, registry),
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-train") as pool,
        ):
            console.print(
                f"A fresh MLflow registry at {registry.tracking_uri.removeprefix('sqlite:///')}; "
                f"users: 6 chats/s through {compute.url('chatbot')} (the chatbot asks the model's "
                f"router) and 10 intent requests/s on {compute.url(cd03.SERVICE)}.",
                highlight=False,
            )
            trainer = Trainer(config_path, registry)

            console.print("[bold]1. The first champion[/]: v1 trained on 70% of the training data")
            v1, took = trainer.train("demo: first champion on 70% of the data", fraction=0.7)
            # the deploy mostly waits (a model process starting, traffic to judge): the next two
            # versions train meanwhile, one after the other, numbered 2 and 3
            more_data = pool.submit(trainer.train, "demo: retrained with more data")
            shuffled = pool.submit(trainer.train, "demo: shuffled labels", shuffled=True)
            console.print(
                f"trained v1 in {took:.0f}s; deploying it (r1 serves the built-in model) while v2 (all "
                "the data) and v3 (shuffled labels) train in the background ..."
            )
            run, steps, took = deploy_version(console, config_path, registry, v1)
            check(run.effective_state is RunState.SUCCEEDED, f"v1 deploy: {run.reason}")
            check(_champion(registry) == v1, "the champion is v1")
            console.print(
                f"run {run.id}: [bold]{run.effective_state.value}[/] in {took:.0f}s; "
                f"champion v{_champion(registry)}, live: {_live(compute)}",
                highlight=False,
            )

            v2 = _trained(
                console, "[bold]2. Retrain with more data[/]: v2 on all of the training data", "v2", more_data
            )
            mark = users.mark()
            run, steps, took = deploy_version(console, config_path, registry, v2)
            console.print(_gate_table("the gate: v2 against the champion v1", steps))
            _print_shadow(console, steps)
            console.print(_judge_table("the canary judge on v2", steps))
            promotion = steps["promote"].output if "promote" in steps else {}
            console.print(
                f"run {run.id}: [bold]{run.effective_state.value}[/] in {took:.0f}s "
                f"(from deploy start to the alias moved); champion v{promotion.get('champion_before')} "
                f"-> v{_champion(registry)}, previous v{_alias(registry, 'previous')}; "
                f"live: {_live(compute)}",
                highlight=False,
            )
            candidate = steps["resolve"].output.get("candidate") if "resolve" in steps else None
            check(run.effective_state is RunState.SUCCEEDED, f"v2 deploy: {run.reason}")
            check(
                _champion(registry) == v2 and _alias(registry, "previous") == v1, "champion v2, previous v1"
            )
            check(_live(compute) == {str(candidate): 100.0}, f"all traffic on {candidate}")
            seen = users.since(mark)
            console.print(
                f"the users meanwhile: {len(seen)} intent requests, "
                f"{sum(1 for s, *_ in seen if s != 200)} failed; by model version: "
                f"{_by_version(registry, seen)}",
                highlight=False,
            )

            v3 = _trained(console, "[bold]3. A bad model[/]: v3 trained on shuffled labels", "v3", shuffled)
            revisions = {r.name for r in compute.status(cd03.SERVICE).revisions}
            run, steps, took = deploy_version(console, config_path, registry, v3)
            console.print(_gate_table("the gate: v3 against the champion v2", steps, failing_only=True))
            console.print(
                f"run {run.id}: [bold]{run.effective_state.value}[/] in {took:.0f}s", highlight=False
            )
            reasons = (steps["gate"].detail.get("gate") or {}).get("reasons", []) if "gate" in steps else []
            console.print(
                f"stopped by the gate: {len(reasons)} failed checks ({'; '.join(reasons[:2])}; ...)",
                highlight=False,
                markup=False,
            )
            deployed = steps["deploy"].status.value if "deploy" in steps else "-"
            check(run.effective_state is RunState.ROLLED_BACK, "v3 stopped")
            check(steps["gate"].detail.get("verdict") == "FAIL", "the gate FAILs v3")
            check(deployed == "skipped", f"nothing deployed (deploy step {deployed})")
            check({r.name for r in compute.status(cd03.SERVICE).revisions} == revisions, "no new revision")
            check(_champion(registry) == v2, "the champion is still v2")
            console.print(
                f"deploy step {deployed}; revisions of {cd03.SERVICE} unchanged; "
                f"champion v{_champion(registry)}",
                highlight=False,
            )
    finally:
        answers = users.stop()
        report = chat.stop()
    failed_users = sum(1 for s, *_ in answers if s != 200)
    console.print(
        f"users of the model endpoint: {len(answers)} requests, {failed_users} failed; "
        f"chats: {report.requests}, {report.failed} failed",
        highlight=False,
    )
    check(failed_users == 0, "no intent request failed")
    check(report.failed == 0, "no chat failed")
    console.print(f"model segment took {time.monotonic() - started:.0f}s", highlight=False)
    return failures


def _trained(console: Console, heading: str, name: str, training: Future[tuple[str, float]]) -> str:
    """Open the next part with ``heading``, wait for its version's training (in the background
    meanwhile) and say how long that took; return the version."""
    console.print()
    console.print(heading)
    version, took = training.result()
    console.print(f"{name} trained in {took:.0f}s")
    return version


def _champion(registry: ModelRegistry) -> str | None:
    return _alias(registry, "champion")


def _alias(registry: ModelRegistry, alias: str) -> str | None:
    found = registry.alias(DEMO_MODEL, alias)
    return found.version if found else None


def _by_version(registry: ModelRegistry, answers: list[tuple[int, str, str]]) -> dict[str, int]:
    """Answers per registry version (``v1``...; the built-in model or an unknown one by its name)."""
    names = {v.tags.get("package_version"): f"v{v.version}" for v in registry.versions(DEMO_MODEL)}
    return dict(Counter(names.get(model, model or "?") for *_, model in answers))


def _live(compute: Compute) -> dict[str, float]:
    return {k: v for k, v in compute.status(cd03.SERVICE).weights.items() if v > 0}


def _gate_table(title: str, steps: dict[str, StepRecord], failing_only: bool = False) -> Table:
    """The gate step's side-by-side rows (champion, candidate, limit, ok); the failing ones only if asked."""
    gate = steps["gate"].detail.get("gate", {}) if "gate" in steps else {}
    verdict = gate.get("verdict", "-")
    table = Table(title=f"{title}: {verdict}")
    for column in ("metric", "champion", "candidate", "limit", "ok"):
        table.add_column(column)
    for row in gate.get("rows", []):
        if failing_only and row["ok"]:
            continue
        table.add_row(
            row["metric"],
            _num(row.get("champion")),
            _num(row.get("candidate")),
            row.get("limit", ""),
            "[green]ok[/]" if row["ok"] else "[bold red]FAIL[/]",
        )
    return table


def _print_shadow(console: Console, steps: dict[str, StepRecord]) -> None:
    detail = steps["shadow"].detail if "shadow" in steps else {}
    reading = detail.get("shadow") or {}
    if not reading:
        console.print("no shadow reading (the run stopped before the shadow)")
        return
    agreement = reading.get("agreement")
    console.print(
        f"shadow: [bold]{detail.get('verdict')}[/]: {reading.get('requests')} mirrored requests, "
        f"{reading.get('compared')} compared, agreement "
        f"{'-' if agreement is None else f'{agreement:.1%}'}, {reading.get('failed')} failed, "
        f"p99 {_num(reading.get('p99_ms'))} ms"
        + (
            " (disagreement within what the offline evaluation explains)"
            if detail.get("explained_by_offline")
            else ""
        ),
        highlight=False,
    )
    for d in list(reading.get("disagreements") or [])[:3]:
        console.print(
            f"  disagreement: {str(d.get('text'))[:60]!r}: "
            f"live {d.get('primary')}, candidate {d.get('shadow')}",
            highlight=False,
            markup=False,
        )


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4g}"
