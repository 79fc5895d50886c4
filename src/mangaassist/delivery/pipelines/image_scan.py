"""CD-01's ``scan`` step: the release's container images judged on their vulnerability findings.

On an aws environment, every container image a release's ``--set-env`` names (``ECS_IMAGE``: CD-01's
``image`` job passes the digest it pushed; ``LAMBDA_IMAGE``: the burst path's function,
``platform.image_scan.IMAGE_ENVS``) is held against the environment's ``scan_limits``
(``rollout.settings``: ``[environments.ENV.deploy]``, default ``CRITICAL = 0``, ``HIGH = 0``; a run's
``scan_limits`` param raises one for that run, recorded in its params and the audit's
``run.started``) before anything is deployed: the same limits for each image, each one by digest.
One image named by both is scanned once (``image_identity``: a tag beside the digest does not make
another image). The findings come from the registry's scanner (``Platform.image_scanner``: ECR's
basic scan, started when none exists, or Inspector's enhanced scan), waited for up to
``scan_timeout_s`` per image, and judged by ``analysis.gates.image_scan_gate``, one check per
limited severity, then ``release_images_gate`` makes one verdict of them: each check and reason
names its image's variables (``LAMBDA_IMAGE: 1 CRITICAL finding(s) ...``) and the step's detail
lists each image's own result and scan report under ``images``. A FAIL of any image stops the run
with nothing deployed, as does an image the scanner gives no findings for (the first such error
ends the step; the images judged before it are in the detail); a run started with ``--override
ENV.gates --reason TEXT`` (only where the policy sets ``gate_overrides``) records the FAIL with
``overridden`` and goes on, as CD-03's gates do.

Anything else is done, with the reason it was not judged in the step's detail (``skipped``): the
local platform runs wheel-based revisions (no image); a release that names no image runs the
environment's fixed ``app_image`` (or ``lambda_image``), which this gate does not judge; and
``rollback app``'s run (param ``rollback_of``) puts back a release that was live, which findings
published since must not hold back in an incident.
"""

from __future__ import annotations

from collections.abc import Mapping

from mangaassist.core.errors import MangaAssistError
from mangaassist.delivery.analysis.gates import GateResult, image_scan_gate, release_images_gate
from mangaassist.delivery.engine.runs import Outcome, StepContext
from mangaassist.delivery.pipelines.gating import gate_outcome
from mangaassist.delivery.pipelines.scope import RunScope
from mangaassist.delivery.rollout.settings import run_settings
from mangaassist.platform.image_scan import IMAGE_ENVS, image_identity

NO_IMAGE_LOCAL = "no container image in this release: the local platform runs wheel-based revisions"
NO_IMAGE_AWS = (
    f"no container image in this release: none of {', '.join(IMAGE_ENVS)} is in its --set-env, so the "
    "revision runs the environment's app_image (lambda_image on Lambda), which this gate does not judge"
)


def release_images(set_env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The container images ``set_env`` names, each once, in ``IMAGE_ENVS`` order: (its label, the
    variables naming it joined by ``+``; the reference, as the first of them gives it)."""
    images: dict[str, tuple[list[str], str]] = {}
    for name in IMAGE_ENVS:
        reference = (set_env.get(name) or "").strip()
        if reference:
            images.setdefault(image_identity(reference), ([], reference))[0].append(name)
    return [("+".join(names), reference) for names, reference in images.values()]


def scan_release(scope: RunScope, ctx: StepContext, set_env: Mapping[str, str], candidate: str) -> Outcome:
    """The ``scan`` step of the release ``candidate`` will run (module docstring)."""
    rollback_of = ctx.params.get("rollback_of")
    if rollback_of:  # an incident's way back is not held by findings published since it was live
        why = f"a rollback to {rollback_of}, a release that was live: its image is not judged again"
        ctx.progress(f"not scanned: {why}")
        return Outcome.done({"scanned": False}, detail={"skipped": why})
    platform = scope.platform
    images = release_images(set_env)
    if platform.provider != "aws" or not images:
        why = NO_IMAGE_AWS if platform.provider == "aws" else NO_IMAGE_LOCAL
        if images and platform.provider != "aws":
            named = ", ".join(f"{label}={image}" for label, image in images)
            why += f" ({named}: only environment variables there)"
        ctx.progress(f"not scanned: {why}")
        return Outcome.done({"scanned": False}, detail={"skipped": why})
    settings = run_settings(ctx.params)
    limits = dict(settings.scan_limits)
    scanner = platform.image_scanner()
    judged: list[tuple[str, GateResult]] = []
    for label, image in images:
        ctx.progress(f"scan findings of {label} {image} (limits: {_limits(limits)})")
        try:
            report = scanner.findings(
                image, poll_s=settings.scan_poll_s, timeout_s=settings.scan_timeout_s, progress=ctx.progress
            )
        except MangaAssistError as exc:  # a bad reference, a missing image, a failed or unfinished scan
            return Outcome.failed(
                f"image scan of {label}: {exc}; nothing was deployed",
                detail={
                    "image": image,
                    "label": label,
                    "error": str(exc),
                    "images": [{"label": done, **result.as_dict()} for done, result in judged],
                },
            )
        judged.append(
            (
                label,
                image_scan_gate(
                    report.counts,
                    limits,
                    worst=[f.as_dict() for f in report.worst],
                    image=image,
                    report={"scan": report.as_dict()},
                ),
            )
        )
    result = release_images_gate(judged, {"limits": limits, "revision": candidate})
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
        failure=f"image scan: {why}; nothing was deployed",  # each reason names its image's variables
    )


def _limits(limits: Mapping[str, int]) -> str:
    return ", ".join(f"{k} <= {v}" for k, v in limits.items())
