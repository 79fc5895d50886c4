#!/usr/bin/env python3
"""Generate the per-pipeline deploy workflows (``.github/workflows/deploy-cd-NN.yml``) from the planner.

Each pipeline's ``on.push.paths`` filter is made from the release planner's path map
(``mangaassist.delivery.planner.CATALOG``: a folder ``F/`` becomes ``F/**``, a file pattern stays
as it is, which GitHub matches from the root, ``*`` within one path segment, as the planner does), so
a workflow cannot trigger on other paths than ``mangaassist release --plan`` maps to its pipeline. A
path two pipelines ship (``data/catalog.jsonl``: CD-04's file, under CD-01's ``data/``) is in both
workflows' filters, so a push there triggers both, side by side. The command each
job runs is the one the README documents for the pipeline (``DEPLOYS`` below). CD-01's workflow
starts with an ``image`` job on the runner host: it builds the ``Dockerfile``'s two targets once
(``IMAGES``: ``ecs``, the ECS image, and ``lambda``, the Lambda burst path's), pushes each to
staging's and then prod's ECR repository (``mangaassist-ENV-chatbot``, tagged by the commit's SHA
and the image's suffix; the same digest in both, or it fails), and each environment's job deploys
its registry's ``REGISTRY/REPO@sha256:...`` of each as the revision's ``ECS_IMAGE`` and
``LAMBDA_IMAGE`` (ADR 0010, "Images"); then, in a second step, it releases the burst service
``chatbot-burst`` with the Lambda image (``AFTER``), only when the environment declares that service
in ``mangaassist.toml`` (a step before asks ``mangaassist deploy services``) and the chatbot's
deploy succeeded;
``tests/unit/delivery/test_workflows.py`` checks that the committed files equal this output, that
the filters match the planner path for path, and that each command and option exists in the CLI.

    python scripts/gen-workflows.py           # write the files
    python scripts/gen-workflows.py --check   # exit 1 and name the files that differ (make lint)

Run it with the project's venv (``.venv/bin/python``): it imports ``mangaassist``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mangaassist.core.configspec import PROFILES
from mangaassist.delivery.planner import CATALOG, PipelineSpec

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = Path(".github") / "workflows"
ENVIRONMENTS = ("staging", "prod")
"""In order: a job for each, the next one ``needs`` the one before."""
BRANCH = "main"

# Pinned by commit (zizmor's unpinned-uses audit; a tag can be moved, a commit cannot). Keep the same
# pins in pull-request.yml (the test checks every `uses:` is pinned by a 40-hex commit).
CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1"
SETUP_NODE = "actions/setup-node@820762786026740c76f36085b0efc47a31fe5020 # v7.0.0"
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c # v6.2.3"
RUNNER = "ubuntu-24.04"
CONTAINER = "python:3.11.13-bookworm"
"""Debian 12 with Python 3.11, what `make setup` and the scripts/ installers expect (Debian's packages)."""
NODE = "20"
_ENVIRONMENT_NOTES = {
    "staging": "    # The `staging` environment holds this job's secrets and variables.\n",
    "prod": (
        "    # The `prod` environment holds this job's secrets and variables and its required reviewers:\n"
        "    # the job, and so the prod role, waits for one of them (docs/production.md).\n"
    ),
}
TIMEOUT_MINUTES = {"staging": 120, "prod": 360}
"""prod waits for the engine's approvals inside the job; 360 minutes is GitHub's limit for a job. The
AWS session lasts as long (the role's MaxSessionDuration must allow it: docs/production.md)."""


@dataclass(frozen=True)
class Deploy:
    commands: tuple[str, ...]
    """``mangaassist`` invocations (``{env}`` is replaced), run in order; the first failure stops the job."""
    script: str = ""
    """A shell script instead of one line per command (``{env}`` is replaced), for CD-07's loop."""
    why: str = ""
    image: bool = False
    """An ``image`` job builds the Dockerfile's targets (``IMAGES``) once and pushes them to each
    environment's registry; each environment's job gets that registry's ``REGISTRY/REPO@sha256:...``
    of each in the image's ``shell`` variable (``$IMAGE``, ``$LAMBDA_IMAGE``)."""
    after: tuple[After, ...] = ()
    """More services the job releases after ``commands``, a step each, in order."""


@dataclass(frozen=True)
class Image:
    """One image the ``image`` job builds from the ``Dockerfile`` and pushes."""

    target: str
    """The Dockerfile's stage (``docker build --target``)."""
    variable: str
    """The revision's env variable its compute provider reads the image from."""
    suffix: str
    """After the commit's SHA in its tag (ECR tags are immutable: each image has its own tag)."""
    shell: str
    """The deploy step's variable holding its reference by digest."""
    title: str

    def key(self, env: str) -> str:
        """The push step's id and the job's output for ``env``: ``staging``, ``staging_lambda``."""
        return env + self.suffix.replace("-", "_")


IMAGES = (
    Image("ecs", "ECS_IMAGE", "", "IMAGE", "ECS image"),
    Image("lambda", "LAMBDA_IMAGE", "-lambda", "LAMBDA_IMAGE", "Lambda image"),
)
LAMBDA = IMAGES[1]
"""The ECS image (the Dockerfile's last stage, what a plain ``docker build`` makes; the revision's
``ECS_IMAGE``, ``platform.aws.compute_ecs``) and the Lambda burst path's (the ``lambda`` stage: the
same plus the AWS Lambda Web Adapter; ``LAMBDA_IMAGE``, ``platform.aws.compute_lambda``), both in
the environment's one chatbot repository (CD-02's compute stack has no other)."""


@dataclass(frozen=True)
class After:
    """A service the job releases after the pipeline's command (``deploy app --service``), in a step
    of its own that runs only when the environment declares the service (``mangaassist deploy
    services``, read from ``mangaassist.toml`` by a step before any credential exists) and every
    step before it succeeded."""

    service: str
    images: tuple[Image, ...]
    """The images the service's revision runs, passed as ``--set-env VARIABLE=$SHELL``."""

    @property
    def output(self) -> str:
        """The ``services`` step's output that says whether the environment declares it."""
        return self.service.replace("-", "_")

    def command(self) -> str:
        """The ``mangaassist`` invocation (``{env}`` is replaced)."""
        images = " ".join(f'--set-env "{i.variable}=${i.shell}"' for i in self.images)
        return f"deploy app --env {{env}} --service {self.service} --yes --json {images}"


BURST = After("chatbot-burst", (LAMBDA,))
"""The burst path on Lambda (docs/aws.md): CD-02 names its function ``mangaassist-ENV-chatbot-burst``,
CD-01 makes it from the Lambda image on the service's first release."""
SERVICES_STEP = "services"


DEPLOYS: dict[str, Deploy] = {
    "CD-01": Deploy(
        (
            "deploy app --env {env} --yes --json "
            + " ".join(f'--set-env "{i.variable}=${i.shell}"' for i in IMAGES),
        ),
        why="the image job's digests in the environment's registry: the new revision's images",
        image=True,
        after=(BURST,),
    ),
    "CD-02": Deploy(("deploy infra --env {env} --yes --json",)),
    "CD-03": Deploy(
        ("deploy model intent --env {env} --yes --json",),
        why="deploys the registry's `candidate` of the intent model (gate, shadow, canary, promote)",
    ),
    "CD-04": Deploy(("kb build --env {env} --json",)),
    "CD-05": Deploy(("deploy frontend --env {env} --json",)),
    "CD-06": Deploy(
        tuple(f"config deploy {profile} --env {{env}} --json" for profile in PROFILES),
        why="every profile in turn; an unchanged profile ends its run at once: nothing to deploy",
    ),
    "CD-07": Deploy(
        ("migrate list --env {env} --json", "migrate apply ID --env {env} --json"),
        script=(
            'pending="$(.venv/bin/mangaassist migrate list --env {env} --json | .venv/bin/python -c '
            '\'import json, sys; print(" ".join(m["id"] for m in json.load(sys.stdin) '
            'if m["state"] == "pending"))\')"\n'
            'echo "pending migrations: ${{pending:-none}}"\n'
            "for id in $pending; do\n"
            '  .venv/bin/mangaassist migrate apply "$id" --env {env} --json'
            ' | tee -a "$RUNNER_TEMP/deploy.json"\n'
            "done\n"
        ),
        why="one apply per pending migration, in order, as `mangaassist release` does",
    ),
    "CD-08": Deploy(("deploy monitoring --env {env} --json",)),
}


IMAGE_JOB = "image"
IMAGE_TIMEOUT_MINUTES = 60
LOCAL_IMAGE = "mangaassist-chatbot"
"""The name of the image the job builds, before it is tagged for a registry."""


def repository(env: str) -> str:
    """The chatbot's image repository in ``env``'s account (CD-02's compute stack makes it)."""
    return f"mangaassist-{env}-chatbot"


_PUSH = """\
registry="$REGISTRY_ACCOUNT.dkr.ecr.$REGISTRY_REGION.amazonaws.com"
aws ecr get-login-password --region "$REGISTRY_REGION" \\
  | docker login --username AWS --password-stdin "$registry"
tag="$GITHUB_SHA$TAG_SUFFIX"
target="$registry/$REPOSITORY:$tag"
digest() {{
  aws ecr describe-images --region "$REGISTRY_REGION" --repository-name "$REPOSITORY" \\
    --image-ids "imageTag=$tag" --query 'imageDetails[0].imageDigest' --output text
}}
# tags are immutable: a re-run finds the commit's image there already, and deploys that one
if found="$(digest 2>/dev/null)"; then
  echo "::notice::$target exists (an earlier attempt pushed it): that image is used"
else
{push}  found="$(digest)"
fi
case "$found" in
  sha256:*) ;;
  *) echo "::error::no digest for $target: $found"; exit 1 ;;
esac
{check}echo "image=$registry/$REPOSITORY@$found" | tee -a "$GITHUB_OUTPUT"
"""
_PUSH_BUILT = f"""\
  docker tag "{LOCAL_IMAGE}:$tag" "$target"
  docker push "$target"
"""
_PUSH_STAGING_IMAGE = """\
  # the very image staging's registry holds (pulled by digest), not this job's build: a re-run
  # after staging's push rebuilt it, and a rebuild is not the same image
  docker pull "$STAGING_IMAGE"
  docker tag "$STAGING_IMAGE" "$target"
  docker push "$target"
"""
_SAME_DIGEST = """\
if [ "$found" != "${STAGING_IMAGE#*@}" ]; then
  echo "::error::$target is $found, staging's image ${STAGING_IMAGE#*@}: not the same image"
  exit 1
fi
"""


def _push_step(image: Image, env: str) -> str:
    """The step that pushes ``image`` to ``env``'s registry (the one template for every image:
    staging's pushes the build, prod's the very image staging's registry holds, by digest)."""
    where = "staging's registry" if env == "staging" else "prod's registry (the same image)"
    if env == "staging":
        script = _PUSH.format(push=_PUSH_BUILT, check="")
        registry = """\
          REGISTRY_ACCOUNT: ${{ vars.AWS_ACCOUNT_ID }}
          REGISTRY_REGION: ${{ vars.AWS_REGION }}
"""
        staging = ""
    else:
        script = _PUSH.format(push=_PUSH_STAGING_IMAGE, check=_SAME_DIGEST)
        registry = """\
          REGISTRY_ACCOUNT: ${{ vars.PROD_AWS_ACCOUNT_ID }}
          REGISTRY_REGION: ${{ vars.PROD_AWS_REGION }}
"""
        staging = f"          STAGING_IMAGE: ${{{{ steps.{image.key('staging')}.outputs.image }}}}\n"
    return f"""\
      - name: push the {image.title} to {where}
        id: {image.key(env)}
        env:
{registry}          REPOSITORY: {repository(env)}
          TAG_SUFFIX: "{image.suffix}"
{staging}        run: |
{_indent(script, 10)}\
"""


def _image_job(spec: PipelineSpec) -> str:
    """Build the repository's Dockerfile's targets once (before any credential exists), push each to
    staging's registry with the staging role, then the same images to prod's with prod's push-only
    image role; the job's outputs are the references by digest, which must be equal per image."""
    seconds = IMAGE_TIMEOUT_MINUTES * 60
    outputs = "".join(
        f"      {image.key(env)}: ${{{{ steps.{image.key(env)}.outputs.image }}}}\n"
        for image in IMAGES
        for env in ENVIRONMENTS
    )
    builds = "".join(
        f"          docker build {'--pull ' if not n else ''}--target {image.target} "
        '--label "org.opencontainers.image.revision=$GITHUB_SHA" \\\n'
        f'            --tag "{LOCAL_IMAGE}:$GITHUB_SHA{image.suffix}" .\n'
        for n, image in enumerate(IMAGES)
    )
    summary = "".join(
        f'            echo "- {image.title}, {env}: ${{{image.key(env).upper()}:-not pushed}}"\n'
        for image in IMAGES
        for env in ENVIRONMENTS
    )
    summary_env = "".join(
        f"          {image.key(env).upper()}: ${{{{ steps.{image.key(env)}.outputs.image }}}}\n"
        for image in IMAGES
        for env in ENVIRONMENTS
    )
    return f"""\
  {IMAGE_JOB}:
    name: image (build once, push to every environment's registry)
    if: github.ref == 'refs/heads/{BRANCH}'
    # on the runner host, not in a container: docker builds and pushes
    runs-on: {RUNNER}
    # The `staging` environment holds the variables of both roles this job assumes: the staging role
    # (AWS_ROLE_ARN) and prod's push-only image role (PROD_IMAGE_ROLE_ARN; docs/production.md).
    environment: staging
    permissions:
      contents: read # check out the code
      id-token: write # the OIDC tokens configure-aws-credentials exchanges for the two roles
    # Two runs of one commit (a push and a dispatch) push one after the other: the second finds the
    # commit's immutable tags and uses those images. Other commits build side by side.
    concurrency:
      group: image-{spec.id}-${{{{ github.sha }}}}
      cancel-in-progress: false
    timeout-minutes: {IMAGE_TIMEOUT_MINUTES}
    outputs:
{outputs}\
    steps:
      - name: check out
        uses: {CHECKOUT}
        with:
          persist-credentials: false
      # the ECS image (the last stage, what a plain build makes) and the Lambda image (the same stage
      # plus the Lambda Web Adapter); the second build reuses the first's layers and base image
      - name: build the Dockerfile's targets (before any credential exists)
        run: |
{builds}\
      - name: AWS credentials for staging (OIDC; no stored keys)
        uses: {AWS_CREDENTIALS}
        with:
          role-to-assume: ${{{{ vars.AWS_ROLE_ARN }}}}
          aws-region: ${{{{ vars.AWS_REGION }}}}
          allowed-account-ids: ${{{{ vars.AWS_ACCOUNT_ID }}}}
          role-session-name: mangaassist-{spec.id}-image-staging-${{{{ github.run_id }}}}
          role-duration-seconds: {seconds}
{"".join(_push_step(image, "staging") for image in IMAGES)}\
      - name: AWS credentials for prod's registry (push only; OIDC)
        uses: {AWS_CREDENTIALS}
        with:
          role-to-assume: ${{{{ vars.PROD_IMAGE_ROLE_ARN }}}}
          aws-region: ${{{{ vars.PROD_AWS_REGION }}}}
          allowed-account-ids: ${{{{ vars.PROD_AWS_ACCOUNT_ID }}}}
          role-session-name: mangaassist-{spec.id}-image-prod-${{{{ github.run_id }}}}
          role-duration-seconds: {seconds}
{"".join(_push_step(image, "prod") for image in IMAGES)}\
      - name: log out of the registries
        if: always()
        run: rm -f "$HOME/.docker/config.json"
      - name: summary
        if: always()
        env:
{summary_env}\
        run: |
          {{
            echo "### the chatbot's images of $GITHUB_SHA"
{summary}\
          }} >> "$GITHUB_STEP_SUMMARY"
"""


def path_filters(spec: PipelineSpec) -> list[str]:
    """GitHub ``paths`` patterns equal to the planner's map of ``spec``: ``F/**`` per folder, then the
    file patterns as they are (GitHub's ``*`` does not match ``/``, as the planner's does not, so
    ``requirements*.txt`` matches at the root only; ``PipelineSpec`` refuses the other wildcards)."""
    return [f"{folder.rstrip('/')}/**" for folder in spec.folders] + list(spec.files)


def file_name(pipeline: str) -> str:
    return f"deploy-{pipeline.lower()}.yml"


def _script(deploy: Deploy, env: str) -> str:
    if deploy.script:
        return deploy.script.format(env=env)
    return "".join(
        f'.venv/bin/mangaassist {command.format(env=env)} | tee -a "$RUNNER_TEMP/deploy.json"\n'
        for command in deploy.commands
    )


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def _services_step(deploy: Deploy, env: str) -> str:
    """The step that says which of ``deploy.after``'s services ``env`` declares (an output each,
    ``true`` or ``false``), from ``mangaassist.toml``; a configuration it cannot read fails the job."""
    if not deploy.after:
        return ""
    checks = "".join(
        f"if grep -qx '{after.service}' <<<\"$declared\"; then\n"
        f'  echo "{after.output}=true" >> "$GITHUB_OUTPUT"\n'
        "else\n"
        f'  echo "::notice::{env} declares no service {after.service}: its release is skipped"\n'
        f'  echo "{after.output}=false" >> "$GITHUB_OUTPUT"\n'
        "fi\n"
        for after in deploy.after
    )
    return f"""\
      - name: the services {env} declares (mangaassist.toml)
        id: {SERVICES_STEP}
        run: |
          declared="$(.venv/bin/mangaassist deploy services --env {env})"
          printf 'declared:\\n%s\\n' "${{declared:-none}}"
{_indent(checks, 10)}\
"""


def _after_step(spec: PipelineSpec, after: After, env: str) -> str:
    """Release ``after.service`` once the pipeline's command succeeded, if ``env`` declares it."""
    image_env = "".join(
        f"          {image.shell}: ${{{{ needs.{IMAGE_JOB}.outputs.{image.key(env)} }}}}\n"
        for image in after.images
    )
    command = after.command().format(env=env)
    return f"""\
      - name: deploy {spec.id}'s {after.service} to {env}
        if: steps.{SERVICES_STEP}.outputs.{after.output} == 'true'
        env:
          MANGAASSIST_STATE_URL: ${{{{ secrets.MANGAASSIST_STATE_URL }}}}
{image_env}\
        run: |
          export MANGAASSIST_AUDIT_KEY_FILE="$RUNNER_TEMP/audit.key"
          .venv/bin/mangaassist {command} | tee -a "$RUNNER_TEMP/deploy.json"
"""


def _job(spec: PipelineSpec, env: str, previous: str | None) -> str:
    deploy = DEPLOYS[spec.id]
    needed = ([IMAGE_JOB] if deploy.image else []) + ([previous] if previous else [])
    needs = f"    needs: {needed[0]}\n" if len(needed) == 1 else ""
    if len(needed) > 1:
        needs = f"    needs: [{', '.join(needed)}]\n"
    images = IMAGES if deploy.image else ()
    image_env = "".join(
        f"          {image.shell}: ${{{{ needs.{IMAGE_JOB}.outputs.{image.key(env)} }}}}\n"
        for image in images
    )
    image_check = "".join(
        f'          if [ -z "${image.shell}" ]; then\n'
        f'            echo "::error::the image job gave no {image.title} for {env}"\n'
        "            exit 1\n"
        "          fi\n"
        for image in images
    )
    return f"""\
  {env}:
    name: {env}
{needs}    if: github.ref == 'refs/heads/{BRANCH}'
    runs-on: {RUNNER}
    container: {CONTAINER}
{_ENVIRONMENT_NOTES[env]}    environment: {env}
    permissions:
      contents: read # check out the code
      id-token: write # the OIDC token configure-aws-credentials exchanges for the environment's role
    # One run per (environment, pipeline) at a time: a deploy in flight is never cancelled; a newer
    # push waits (GitHub keeps the newest waiting run only, and it deploys the newest commit). The
    # engine's (environment, target) lock in the shared state database is what keeps every other
    # writer out (docs/decisions/0010-github-actions-and-release-flow.md).
    concurrency:
      group: deploy-{env}-{spec.id}
      cancel-in-progress: false
    timeout-minutes: {TIMEOUT_MINUTES[env]}
    env:
      CI: "true"
      HF_HUB_OFFLINE: "1"
      TRANSFORMERS_OFFLINE: "1"
      MANGAASSIST_ACTOR: ${{{{ github.actor }}}}
    steps:
      - name: check out
        uses: {CHECKOUT}
        with:
          persist-credentials: false
      - name: trust the workspace (the container's user is not the checkout's owner)
        run: git config --global --add safe.directory "$GITHUB_WORKSPACE"
      - name: node {NODE} (jsii for the CDK app, the widget's build)
        uses: {SETUP_NODE}
        with:
          node-version: "{NODE}"
      - name: set up (make setup, as .ci/run does)
        run: make setup
{_services_step(deploy, env)}\
      - name: audit key (the same key on every runner, so the audit chain verifies)
        env:
          AUDIT_KEY: ${{{{ secrets.MANGAASSIST_AUDIT_KEY }}}}
        run: |
          if [ -z "$AUDIT_KEY" ]; then
            echo "::error::secret MANGAASSIST_AUDIT_KEY is not set in environment {env}: docs/production.md"
            exit 1
          fi
          umask 077
          printf '%s' "$AUDIT_KEY" | base64 -d > "$RUNNER_TEMP/audit.key"
      - name: AWS credentials (OIDC; no stored keys)
        uses: {AWS_CREDENTIALS}
        with:
          role-to-assume: ${{{{ vars.AWS_ROLE_ARN }}}}
          aws-region: ${{{{ vars.AWS_REGION }}}}
          allowed-account-ids: ${{{{ vars.AWS_ACCOUNT_ID }}}}
          role-session-name: mangaassist-{spec.id}-{env}-${{{{ github.run_id }}}}
          # as long as the job may last: a prod run can wait hours for its approvals, then apply
          role-duration-seconds: {TIMEOUT_MINUTES[env] * 60}
      - name: deploy {spec.id} to {env}
        env:
          MANGAASSIST_STATE_URL: ${{{{ secrets.MANGAASSIST_STATE_URL }}}}
{image_env}        run: |
          # without it the engine would keep runs and locks in SQLite on this runner, shared with no one
          if [ -z "$MANGAASSIST_STATE_URL" ]; then
            echo "::error::secret MANGAASSIST_STATE_URL is not set in environment {env}: docs/production.md"
            exit 1
          fi
          # $RUNNER_TEMP, not runner.temp: in a container job only the variable holds the container's path
          export MANGAASSIST_AUDIT_KEY_FILE="$RUNNER_TEMP/audit.key"
{image_check}{_indent(_script(deploy, env), 10)}\
{"".join(_after_step(spec, after, env) for after in deploy.after)}\
      - name: summary
        if: always()
        run: |
          {{
            echo "### {spec.id} ({spec.title}) in {env}"
            echo '```json'
            cat "$RUNNER_TEMP/deploy.json" 2>/dev/null || echo "no result (the job stopped before the deploy)"
            echo '```'
          }} >> "$GITHUB_STEP_SUMMARY"
"""


def render(spec: PipelineSpec) -> str:
    """The deploy workflow of one pipeline, as committed."""
    deploy = DEPLOYS[spec.id]
    paths = "".join(f'      - "{pattern}"\n' for pattern in path_filters(spec))
    commands = "".join(f"#   mangaassist {c.format(env='ENV')}\n" for c in deploy.commands)
    commands += "".join(
        f"# then, if the environment declares the service {a.service} (mangaassist.toml):\n"
        f"#   mangaassist {a.command().format(env='ENV')}\n"
        for a in deploy.after
    )
    why = f"# ({deploy.why})\n" if deploy.why else ""
    jobs = [_image_job(spec)] if deploy.image else []
    previous = None
    for env in ENVIRONMENTS:
        jobs.append(_job(spec, env, previous))
        previous = env
    return f"""\
# GENERATED by scripts/gen-workflows.py from the release planner's path map
# (src/mangaassist/delivery/planner.py, CATALOG). Do not edit: change the planner or the generator,
# run `.venv/bin/python scripts/gen-workflows.py` and commit both; `make lint` and
# tests/unit/delivery/test_workflows.py fail while this file differs from the generator's output.
#
# {spec.id} ({spec.title}): on a push to {BRANCH} that changes what the planner maps to {spec.id},
# staging first, then prod behind the `prod` environment's required reviewers. Each job runs
{commands}{why}# on the delivery engine, its state in the PostgreSQL database MANGAASSIST_STATE_URL names,
# so every runner and every laptop share runs, locks, approvals and the audit log.
# Set-up: docs/production.md; why: docs/decisions/0010-github-actions-and-release-flow.md.
name: "deploy {spec.id}: {spec.title}"

on:
  push:
    branches: [{BRANCH}]
    paths:
{paths}  workflow_dispatch:

permissions: {{}}

defaults:
  run:
    shell: bash

jobs:
{"".join(jobs)}"""


def outputs() -> dict[Path, str]:
    """Every generated file (relative to the repository root) and its content."""
    return {WORKFLOWS / file_name(spec.id): render(spec) for spec in CATALOG}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Compare only; exit 1 if a file differs.")
    parser.add_argument("--root", type=Path, default=ROOT, help="The repository (default: this one).")
    args = parser.parse_args(argv)
    missing = sorted(set(DEPLOYS) ^ {spec.id for spec in CATALOG})
    if missing:
        print(
            f"gen-workflows: DEPLOYS and the planner's CATALOG differ on {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    stale = []
    for relative, text in outputs().items():
        path = args.root / relative
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(str(relative))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(
            f"gen-workflows: {', '.join(stale)} differ from the planner's map; "
            "run .venv/bin/python scripts/gen-workflows.py and commit the result",
            file=sys.stderr,
        )
        return 1
    if not args.check:
        print(f"gen-workflows: {len(stale)} file(s) written, {len(CATALOG) - len(stale)} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
