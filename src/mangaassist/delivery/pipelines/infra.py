"""CD-02, infrastructure as code: the declaration (``infra/resources.toml``) provisioned on the
environment's provider, destructive changes refused before they apply.

A local environment (``dev``), one engine step each:

1. ``plan``: the declared resources against what the local provider has (``delivery.infra.plan``):
   create, update, unchanged, and drift (provisioned by CD-02, deleted or changed since);
2. ``apply``: each create and update as an effect (a resumed run never applies one twice). A second
   run finds everything unchanged and says so.

An aws environment (``staging``, ``prod``):

1. ``synth``: ``python infra/app.py --env ENV`` (offline, no credentials; cdk-nag's AwsSolutions
   checks run inside and fail it on an unacknowledged finding);
2. ``gates``: cfn-lint on every template (no error) and ``delivery.infra.template_findings`` (the
   assertions every template must hold: retention, deletion protection, point-in-time recovery,
   versioned encrypted buckets, tags, no unacknowledged wildcard IAM action);
3. ``diff``: against the templates the environment's last successful CD-02 run applied (kept in the
   engine's state, that run's ``apply`` output), or the ``against`` param (a directory of templates);
   every resource change classified (``delivery.infra.classify``);
4. ``guard``: a replacement or deletion of a stateful resource is refused unless the run was started
   with ``--override ENV.destructive --reason TEXT`` (audited);
5. ``approve``: the approvals the policy asks for (prod: two for CD-02, ``policy.yaml``) of the
   printed diff;
6. ``apply``: one CloudFormation change set per stack in dependency order (create, describe,
   execute, wait), each an effect; the applied templates are the step's output;
7. ``drift``: drift detection on every stack, reported.

Params: ``environment`` (required), ``root`` (the repository), ``resources`` / ``environments``
(other declaration files), ``against`` (templates to diff against instead of the last applied).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mangaassist.core.errors import ConfigError
from mangaassist.core.resources import load_declaration, load_environments
from mangaassist.delivery.analysis.gates import Comparison, GateResult, check
from mangaassist.delivery.engine.runs import Outcome, Pipeline, Step, StepContext, approval_step
from mangaassist.delivery.infra import (
    Action,
    TemplateChange,
    classify,
    plan,
    specs,
    template_findings,
)
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.platform.factory import settings_for
from mangaassist.platform.infra import Provisioner, ResourceSpec
from mangaassist.platform.settings import find_root, state_home

NAME = "CD-02"
STACK_ORDER = ("network", "data", "compute", "ml", "edge", "config", "monitoring")
"""Dependency order of a stage's stacks (each may use the ones before it)."""
SYNTH_TIMEOUT_S = 600.0


def root_of(params: dict[str, Any]) -> Path:
    return find_root(params.get("root"), needs=("infra/resources.toml", "infra/environments.toml"))


def declaration_paths(params: dict[str, Any]) -> tuple[Path, Path]:
    root = root_of(params)
    resources = Path(params.get("resources") or root / "infra" / "resources.toml")
    environments = Path(params.get("environments") or root / "infra" / "environments.toml")
    return resources, environments


def build(params: dict[str, Any]) -> Pipeline:
    environment = params.get("environment")
    if not environment:
        raise ConfigError("CD-02 needs the param environment=NAME")
    resources, environments = declaration_paths(params)
    load_declaration(resources)  # bad input fails before the run starts
    provider = settings_for(str(environment)).provider
    if provider == "aws" and str(environment) not in load_environments(environments):
        raise ConfigError(f"{environments} has no environment {environment!r}")
    scope = RunScope(str(environment))
    steps: tuple[Step, ...]
    if provider == "local":
        steps = (
            Step("plan", scope.bind(_plan), "the declared resources against the local provider"),
            Step("apply", scope.bind(_apply_local), "create and update what the plan lists"),
        )
    else:
        steps = (
            Step("synth", scope.bind(_synth), "synthesize the CDK app offline (cdk-nag inside)"),
            Step("gates", scope.bind(_gates), "cfn-lint and the template assertions"),
            Step("diff", scope.bind(_diff), "against the templates last applied; classify each change"),
            Step("guard", scope.bind(_guard), "refuse a destructive change unless overridden"),
            approval_step("approve", "approval of the printed diff, as the policy asks"),
            Step("apply", scope.bind(_apply_aws), "CloudFormation change sets, stack by stack"),
            Step("drift", scope.bind(_drift), "drift detection on every stack"),
        )
    return Pipeline(
        NAME,
        steps,
        description=f"infrastructure of {environment} ({provider} provider)",
        params=params,
        close=scope.close,
    )


# -- local ---------------------------------------------------------------------------------------------


def local_plan(scope: RunScope, params: dict[str, Any]) -> list[dict[str, Any]]:
    resources, _ = declaration_paths(params)
    wanted = specs(load_declaration(resources))
    provisioner = scope.platform.provisioner()
    return [c.as_dict() for c in plan(wanted, provisioner.current(wanted))]


def _plan(scope: RunScope, ctx: StepContext) -> Outcome:
    changes = local_plan(scope, ctx.params)
    todo = [c for c in changes if c["action"] != Action.UNCHANGED.value]
    drift = [c for c in changes if c["drift"]]
    for c in todo:
        ctx.progress(
            f"{c['action']} {c['kind']}/{c['name']}" + (f" (drift: {c['drift']})" if c["drift"] else "")
        )
    return Outcome.done(
        {"changes": changes},
        numbers={"to_change": float(len(todo)), "drift": float(len(drift)), "resources": float(len(changes))},
        detail={
            "summary": f"{len(todo)} to change, {len(changes) - len(todo)} unchanged, {len(drift)} drifted"
        },
    )


def _provision(provisioner: Provisioner, spec: ResourceSpec, _key: str) -> str:
    return provisioner.apply(spec)


def _apply_local(scope: RunScope, ctx: StepContext) -> Outcome:
    resources, _ = declaration_paths(ctx.params)
    wanted = {s.key: s for s in specs(load_declaration(resources))}
    provisioner = scope.platform.provisioner()
    applied = []
    for change in ctx.outputs["plan"]["changes"]:
        if change["action"] == Action.UNCHANGED.value:
            continue
        spec = wanted[f"{change['kind']}/{change['name']}"]
        did = str(
            ctx.effect(f"apply:{spec.key}:{spec.digest}", functools.partial(_provision, provisioner, spec))
        )
        ctx.progress(did)
        applied.append({"resource": spec.key, "did": did})
    message = f"{len(applied)} resource(s) changed" if applied else "no changes: everything is as declared"
    return Outcome.done(
        {"applied": applied}, numbers={"applied": float(len(applied))}, detail={"message": message}
    )


# -- aws -----------------------------------------------------------------------------------------------


def synthesize(params: dict[str, Any], environments: list[str] | None, outdir: Path) -> dict[str, Any]:
    """Run the CDK app for ``environments`` (None: every one); its JSON summary. A ConfigError with
    the app's own message (bad declaration, cdk-nag findings) when it fails."""
    root = root_of(params)
    resources, env_file = declaration_paths(params)
    picked = [a for e in environments or [] for a in ("--env", e)]
    command = [
        sys.executable,
        str(root / "infra" / "app.py"),
        *picked,
        "--outdir",
        str(outdir),
        "--resources",
        str(resources),
        "--environments",
        str(env_file),
        "--json",
    ]
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SYNTH_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"synth took over {SYNTH_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")[-4000:]
        raise ConfigError(f"synth of {', '.join(environments or ['every environment'])} failed: {message}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _stack_key(name: str) -> tuple[int, str]:
    tail = name.rsplit("-", 1)[-1].lower()
    return (STACK_ORDER.index(tail) if tail in STACK_ORDER else len(STACK_ORDER), name)


def load_templates(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {stack: json.loads(Path(path).read_text()) for stack, path in sorted(paths.items())}


def templates_in(directory: Path, environment: str | None = None) -> dict[str, dict[str, Any]]:
    """The stack templates of a synth's output (a cloud assembly) by stack name, from its
    ``manifest.json`` files (of one stage when ``environment`` is given)."""
    stacks: dict[str, dict[str, Any]] = {}
    for manifest in sorted(directory.rglob("manifest.json")):
        try:
            artifacts = json.loads(manifest.read_text()).get("artifacts", {})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{manifest}: not a cloud assembly manifest ({exc})") from exc
        for artifact_id, artifact in artifacts.items():
            if artifact.get("type") != "aws:cloudformation:stack":
                continue
            props = artifact.get("properties", {})
            name = str(props.get("stackName") or artifact_id)
            if environment and not str(artifact.get("displayName", "")).startswith(f"{environment}/"):
                continue
            stacks[name] = json.loads((manifest.parent / props["templateFile"]).read_text())
    if not stacks:
        raise ConfigError(
            f"{directory}: no stack templates (a cdk synth output with manifest.json) to diff against"
        )
    return stacks


def _synth(scope: RunScope, ctx: StepContext) -> Outcome:
    environment = ctx.run.environment
    outdir = state_home(root_of(ctx.params)) / "infra" / "synth" / ctx.run.id
    started = time.perf_counter()
    summary = synthesize(ctx.params, [environment], outdir)
    stacks = dict(summary.get("stages", {}).get(environment, {}))
    if not stacks:
        return Outcome.failed(f"the CDK app synthesized no stack for {environment}")
    digests = {s: hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for s, p in stacks.items()}
    return Outcome.done(
        {"outdir": str(outdir), "stacks": stacks, "digests": digests},
        numbers={"stacks": float(len(stacks)), "seconds": round(time.perf_counter() - started, 2)},
    )


def lint(paths: list[str]) -> list[dict[str, Any]]:
    """cfn-lint's findings on the templates (its Python API; every rule, errors and warnings)."""
    try:
        from cfnlint.api import lint_file
    except ImportError as exc:
        raise ConfigError("the infrastructure gates need cfn-lint: pip install -e '.[infra]'") from exc
    out = []
    for path in paths:
        for match in lint_file(Path(path)):
            out.append(
                {
                    "Filename": path,
                    "Level": str(match.rule.severity).capitalize(),
                    "Rule": {"Id": match.rule.id},
                    "Message": match.message,
                }
            )
    return out


def acknowledged_wildcards(templates: dict[str, dict[str, Any]]) -> frozenset[str]:
    """``stack/logical_id`` of resources whose metadata acknowledges cdk-nag's IAM5 (wildcards)."""
    found = set()
    for stack, template in templates.items():
        for logical_id, res in template.get("Resources", {}).items():
            if "IAM5" in json.dumps(res.get("Metadata", {})):
                found.add(f"{stack}/{logical_id}")
    return frozenset(found)


def infra_gate(paths: dict[str, str]) -> GateResult:
    templates = load_templates(paths)
    matches = lint(list(paths.values()))
    errors = [m for m in matches if str(m.get("Level")) == "Error"]
    findings = template_findings(templates, acknowledged_wildcards(templates))
    checks = (
        check(
            "cfn-lint errors",
            float(len(errors)),
            Comparison.AT_MOST,
            0.0,
            reason=_lines(
                [f"{m.get('Filename')}: {m.get('Rule', {}).get('Id')}: {m.get('Message')}" for m in errors]
            ),
        ),
        check(
            "template findings",
            float(len(findings)),
            Comparison.AT_MOST,
            0.0,
            reason=_lines([f.line() for f in findings]),
        ),
    )
    return GateResult(
        checks,
        measured={
            "cfn_lint_errors": float(len(errors)),
            "cfn_lint_warnings": float(len(matches) - len(errors)),
            "template_findings": float(len(findings)),
        },
        report={"findings": [f.line() for f in findings], "cfn_lint": [m.get("Message") for m in errors]},
    )


def _lines(lines: list[str], keep: int = 5) -> str:
    more = f" (and {len(lines) - keep} more)" if len(lines) > keep else ""
    return "; ".join(lines[:keep]) + more


def _gates(scope: RunScope, ctx: StepContext) -> Outcome:
    result = infra_gate(ctx.outputs["synth"]["stacks"])
    return gate_outcome(
        result, failure="the templates failed the infrastructure gates: " + "; ".join(result.reasons)
    )


def baseline(ctx: StepContext) -> tuple[str, dict[str, dict[str, Any]]]:
    against = ctx.params.get("against")
    if against:
        return str(against), templates_in(Path(str(against)), ctx.run.environment)
    last = ctx.last_output("apply")
    if last is None:
        return "nothing applied yet", {}
    run_id, output = last
    return f"run {run_id}", dict(output.get("templates", {}))


def _diff(scope: RunScope, ctx: StepContext) -> Outcome:
    source, old = baseline(ctx)
    new = load_templates(ctx.outputs["synth"]["stacks"])
    changes = classify(old, new)
    for c in changes:
        ctx.progress(c.line())
    destructive = [c for c in changes if c.destructive]
    counts = {
        k: float(sum(1 for c in changes if c.kind.value == k)) for k in ("add", "modify", "replace", "delete")
    }
    return Outcome.done(
        {"against": source, "changes": [c.as_dict() for c in changes], "destructive": len(destructive)},
        numbers={**counts, "destructive": float(len(destructive))},
        detail={"against": source, "diff": [c.line() for c in changes] or ["no changes"]},
    )


def destructive_refusal(
    changes: list[TemplateChange], environment: str, overrides: dict[str, str]
) -> str | None:
    """Why the run must stop before applying, or None: a destructive change without the override."""
    destructive = [c for c in changes if c.destructive]
    rule = f"{environment}.destructive"
    if not destructive or rule in overrides:
        return None
    listed = "; ".join(
        f"{c.kind.value} of {c.stack}/{c.logical_id} ({c.resource_type})" for c in destructive[:5]
    )
    return (
        f"{len(destructive)} destructive change(s) refused ({listed}): a stateful resource would be "
        f"replaced or deleted; start the run with --override {rule} --reason TEXT to accept the loss"
    )


def _guard(scope: RunScope, ctx: StepContext) -> Outcome:
    changes = [TemplateChange.from_dict(c) for c in ctx.outputs["diff"]["changes"]]
    refusal = destructive_refusal(changes, ctx.run.environment, ctx.run.overrides)
    if refusal:
        return Outcome.failed(refusal, detail={"refused": [c.as_dict() for c in changes if c.destructive]})
    rule = f"{ctx.run.environment}.destructive"
    if any(c.destructive for c in changes):
        return Outcome.done(detail={"overridden": rule, "reason": ctx.run.overrides[rule]})
    return Outcome.done(detail={"destructive": 0})


def _apply_aws(scope: RunScope, ctx: StepContext) -> Outcome:
    stacks = ctx.outputs["synth"]["stacks"]
    templates = load_templates(stacks)
    applier = scope.platform.stacks()
    environment = ctx.run.environment
    tags = {"environment": environment, "pipeline": NAME}
    results = {}
    for stack in sorted(stacks, key=_stack_key):
        body = json.dumps(templates[stack], sort_keys=True)

        def apply(_key: str, stack: str = stack, body: str = body) -> dict[str, Any]:
            change_set = applier.create(stack, body, tags=tags)
            result = applier.execute(change_set)
            return {"change_set": change_set.name, "empty": change_set.empty, "status": str(result)}

        results[stack] = ctx.effect(f"apply:{stack}:{ctx.outputs['synth']['digests'][stack]}", apply)
        ctx.progress(f"{stack}: {results[stack]['status']}")
    return Outcome.done({"templates": templates, "stacks": results}, numbers={"stacks": float(len(results))})


def _drift(scope: RunScope, ctx: StepContext) -> Outcome:
    applier = scope.platform.stacks()
    reports = {}
    for stack in sorted(ctx.outputs["synth"]["stacks"], key=_stack_key):
        report = applier.detect_drift(stack)
        reports[stack] = {"status": report.status, "drifted": [str(d) for d in report.drifted]}
    drifted = [s for s, r in reports.items() if r["status"] != "IN_SYNC"]
    return Outcome.done(
        {"drift": reports}, numbers={"drifted_stacks": float(len(drifted))}, detail={"drift": reports}
    )
