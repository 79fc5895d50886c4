"""The CDK app of CD-02: one Stage per environment (dev, staging, prod), seven stacks each, from
infra/resources.toml and infra/environments.toml. Synthesizes offline; cdk-nag's AwsSolutions checks
fail the synth on any finding that is neither fixed nor acknowledged in code.

    python infra/app.py [--outdir DIR] [--env dev|staging|prod ...] [--resources PATH]
                        [--environments PATH] [--json]

``npx cdk synth`` (from infra/, with the venv active) runs the same app. Exit 0: synthesized, a
summary printed (``--json``: {"outdir", "stages": {env: {stack: template}}, "seconds"}). Exit 2:
bad input (the ConfigError as it is) or cdk-nag findings (each printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
sys.path.insert(0, str(INFRA))
try:
    import mangaassist  # noqa: F401
except ImportError:  # run without the package installed: use the tree's source
    sys.path.insert(0, str(ROOT / "src"))

from mangaassist_infra import EnvironmentStage, InfraApp  # noqa: E402
from mangaassist_infra.config import check_profile_files  # noqa: E402

from mangaassist.core.errors import ConfigError  # noqa: E402
from mangaassist.core.resources import (  # noqa: E402
    ENVIRONMENTS,
    environment,
    load_declaration,
    load_environments,
)

RESOURCES = INFRA / "resources.toml"
ENVIRONMENTS_FILE = INFRA / "environments.toml"
CDK_JSON = INFRA / "cdk.json"
DEFAULT_OUTDIR = INFRA / "cdk.out"
VALIDATION_REPORT = "validation-report.json"


class NagFindings(Exception):
    """cdk-nag (or CDK's own validation) left findings; the message lists them, one a line."""


def feature_flags() -> dict[str, object]:
    """cdk.json's context (the feature flags), so an in-process synth matches ``cdk synth``."""
    return dict(json.loads(CDK_JSON.read_text()).get("context", {}))


def build_app(
    outdir: Path,
    environments: list[str] | None = None,
    resources: Path = RESOURCES,
    env_file: Path = ENVIRONMENTS_FILE,
) -> InfraApp:
    """The app with a stage per environment (all by default), nothing synthesized yet. Both files
    are validated first: a ConfigError naming the file and the field, and no App, otherwise."""
    declaration = load_declaration(resources)
    settings = load_environments(env_file)
    names = list(dict.fromkeys(environments or ENVIRONMENTS))
    chosen = {name: environment(settings, name, env_file) for name in names}
    check_profile_files(declaration, ROOT, resources)

    app = InfraApp(outdir=str(outdir), context=feature_flags())
    for name, env in chosen.items():
        app.stages[name] = EnvironmentStage(app, name, environment=env, declaration=declaration, root=ROOT)
    return app


def synth(app: InfraApp, outdir: Path) -> dict[str, dict[str, str]]:
    """Synthesize; the template of each stage's stacks, by stack name. NagFindings on findings."""
    try:
        app.synth()
    except RuntimeError as exc:
        if "ValidationFailed" not in str(exc):
            raise
        raise NagFindings(findings(outdir / VALIDATION_REPORT)) from None
    return {
        name: {stack.stack_name: stack.template_full_path for stack in stage.synth().stacks}
        for name, stage in app.stages.items()
    }


def findings(report: Path) -> str:
    """The validation report's violations, one line per construct."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return f"synthesis failed validation; see {report}"
    lines = []
    for plugin in data.get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for construct in violation.get("violatingConstructs", []):
                lines.append(
                    f"{violation.get('ruleName')} at {construct.get('constructPath')}: "
                    f"{violation.get('description')}"
                )
    return "\n".join(lines) or f"synthesis failed validation; see {report}"


def _display(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/app.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, default=None, help="default: $CDK_OUTDIR or infra/cdk.out")
    parser.add_argument("--env", dest="envs", action="append", metavar="ENV", help="dev, staging, prod")
    parser.add_argument("--resources", type=Path, default=RESOURCES)
    parser.add_argument("--environments", type=Path, default=ENVIRONMENTS_FILE)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    outdir = (args.outdir or Path(os.environ.get("CDK_OUTDIR") or DEFAULT_OUTDIR)).resolve()

    started = time.monotonic()
    try:
        app = build_app(outdir, args.envs, args.resources, args.environments)
        stages = synth(app, outdir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NagFindings as exc:
        count = len(str(exc).splitlines())
        print(f"error: {count} cdk-nag finding(s), neither fixed nor acknowledged:\n{exc}", file=sys.stderr)
        return 2
    seconds = round(time.monotonic() - started, 2)

    if args.json:
        print(json.dumps({"outdir": str(outdir), "stages": stages, "seconds": seconds}, indent=2))
        return 0
    stacks = sum(len(s) for s in stages.values())
    print(f"synthesized {len(stages)} stage(s), {stacks} stack(s) in {seconds}s into {_display(outdir)}")
    for name, templates in stages.items():
        print(f"{name}:")
        for stack, template in templates.items():
            print(f"  {stack:32} {_display(template)}")
    rules = Counter(ack.rule for ack in app.acknowledged)
    print(f"cdk-nag AwsSolutions: no finding left; {len(app.acknowledged)} acknowledged in code:")
    for rule, count in sorted(rules.items()):
        print(f"  {count:3} x {rule}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
