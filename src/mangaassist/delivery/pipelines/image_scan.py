"""CD-01's ``scan`` step: the release's container image judged on its vulnerability findings.

On an aws environment, a release whose ``--set-env`` names its image (``ECS_IMAGE``: CD-01's
``image`` job passes the digest it pushed) is held against the environment's ``scan_limits``
(``rollout.settings``: ``[environments.ENV.deploy]``, default ``CRITICAL = 0``, ``HIGH = 0``; a run's
``scan_limits`` param raises one for that run, recorded in its params and the audit's
``run.started``) before anything is deployed: the findings come from the registry's scanner
(``Platform.image_scanner``: ECR's basic scan, started when none exists, or Inspector's enhanced
scan), waited for up to ``scan_timeout_s``, and judged by ``analysis.gates.image_scan_gate``, one
check per limited severity. A FAIL stops the run with nothing deployed; a run started with
``--override ENV.gates --reason TEXT`` (only where the policy sets ``gate_overrides``) records the
FAIL with ``overridden`` and goes on, as CD-03's gates do.

Anything else is done, with the reason it was not judged in the step's detail (``skipped``): the
local platform runs wheel-based revisions (no image); a release without ``ECS_IMAGE`` runs the
environment's fixed ``app_image``, which this gate does not judge; and ``rollback app``'s run (param
``rollback_of``) puts back a release that was live, which findings published since must not hold
back in an incident.
"""

from __future__ import annotations

from collections.abc import Mapping

from mangaassist.core.errors import MangaAssistError
from mangaassist.delivery.analysis.gates import image_scan_gate
from mangaassist.delivery.engine.runs import Outcome, StepContext
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.settings import run_settings
from mangaassist.platform.image_scan import IMAGE_ENV

NO_IMAGE_LOCAL = "no container image in this release: the local platform runs wheel-based revisions"
NO_IMAGE_AWS = (
    f"no container image in this release: {IMAGE_ENV} is not in its --set-env, so the revision runs "
    "the environment's app_image, which this gate does not judge"
)


def scan_release(scope: RunScope, ctx: StepContext, set_env: Mapping[str, str], candidate: str) -> Outcome:
    """The ``scan`` step of the release ``candidate`` will run (module docstring)."""
    rollback_of = ctx.params.get("rollback_of")
    if rollback_of:  # an incident's way back is not held by findings published since it was live
        why = f"a rollback to {rollback_of}, a release that was live: its image is not judged again"
        ctx.progress(f"not scanned: {why}")
        return Outcome.done({"scanned": False}, detail={"skipped": why})
    platform = scope.platform
    image = set_env.get(IMAGE_ENV)
    if platform.provider != "aws" or not image:
        why = NO_IMAGE_AWS if platform.provider == "aws" else NO_IMAGE_LOCAL
        if image and platform.provider != "aws":
            why += f" ({IMAGE_ENV}={image} is only an environment variable there)"
        ctx.progress(f"not scanned: {why}")
        return Outcome.done({"scanned": False}, detail={"skipped": why})
    settings = run_settings(ctx.params)
    limits = dict(settings.scan_limits)
    ctx.progress(f"scan findings of {image} (limits: {_limits(limits)})")
    try:
        report = platform.image_scanner().findings(
            image, poll_s=settings.scan_poll_s, timeout_s=settings.scan_timeout_s, progress=ctx.progress
        )
    except MangaAssistError as exc:  # a bad reference, a missing image, a failed or unfinished scan
        return Outcome.failed(
            f"image scan: {exc}; nothing was deployed", detail={"image": image, "error": str(exc)}
        )
    result = image_scan_gate(
        report.counts,
        limits,
        worst=[f.as_dict() for f in report.worst],
        image=image,
        report={"scan": report.as_dict(), "limits": limits, "revision": candidate},
    )
    why = "; ".join(result.reasons)
    rule = f"{ctx.run.environment}.gates"
    if not result.passed and rule in ctx.run.overrides:
        ctx.progress(f"image scan FAIL overridden ({rule}: {ctx.run.overrides[rule]}): {why}")
        return Outcome.done(
            {"scanned": True, "verdict": "FAIL", "overridden": rule},
            verdict=result.verdict,
            numbers=result.numbers(),
            detail={**result.as_dict(), "overridden": rule, "override_reason": ctx.run.overrides[rule]},
        )
    return gate_outcome(
        result,
        output={"scanned": True, "verdict": result.verdict.value},
        failure=f"image scan of {image}: {why}; nothing was deployed",
    )


def _limits(limits: Mapping[str, int]) -> str:
    return ", ".join(f"{k} <= {v}" for k, v in limits.items())
