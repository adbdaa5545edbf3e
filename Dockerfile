# deploy-guard's own image: the one cloudbuild.yaml runs in its "check" step.
#
#   docker build -t deploy-guard:0.1.0 .      # or: gcloud builds submit --tag <registry path> .
#   docker run --rm deploy-guard:0.1.0 --help
#
# Small on purpose: the slim Python base pinned to an exact release, only the runtime
# dependencies (no dev extras, no compiler: every dependency ships manylinux wheels), no
# pip cache, and a non-root user. Google credentials come from the environment at run time
# (the metadata server in Cloud Build); nothing secret is ever baked in.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Reproducible: every dependency (and the build backend) comes from requirements.lock,
# pinned to the versions the tests ran with and checked against its sha256 hashes
# (--require-hashes refuses anything unpinned or altered, --no-deps resolves nothing,
# --only-binary compiles nothing). Then the package itself, with --no-deps and no build
# isolation: nothing else is downloaded. `pip check` fails the build when the lock no
# longer satisfies pyproject.toml (`make lock` regenerates it). Only what the build needs
# is copied (see .dockerignore); the sources are removed afterwards.
COPY requirements.lock /tmp/deploy-guard/
RUN pip install --require-hashes --no-deps --only-binary :all: -r /tmp/deploy-guard/requirements.lock
COPY pyproject.toml README.md /tmp/deploy-guard/
COPY src /tmp/deploy-guard/src
RUN pip install --no-deps --no-build-isolation /tmp/deploy-guard \
    && pip check \
    && rm -rf /tmp/deploy-guard \
    && useradd --create-home --uid 10001 --user-group guard

# Numeric, so that platforms that enforce "run as non-root" can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /workspace

ENTRYPOINT ["deploy-guard"]
CMD ["--help"]
