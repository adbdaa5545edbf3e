#!/usr/bin/env bash
# The identity deploy-guard watch runs as, and the least it needs to watch and roll back.
#
#   PROJECT_ID=my-project REGION=europe-west1 SERVICES="chat-agent billing-api" \
#     bash deploy/watch/roles.sh
#
# Optional: PRIVATE=1 when the services do not allow unauthenticated calls (the watcher's
# probes then need roles/run.invoker; the ID token comes from its own metadata server);
# DEPLOYER=user:you@example.com (or serviceAccount:...) for whoever applies the manifests,
# who must be able to act as the watcher's account; STARTER=serviceAccount:... with
# JOB=deploy-guard-watch-fleet for a pipeline that starts a watch job after each deploy.
#
# Every grant is on the narrowest resource that takes it; docs/permissions.md ("deploy-guard
# watch") says why each one is there. Re-running it is harmless: IAM bindings are sets.
set -euo pipefail
# shellcheck source=../guard-roles.sh
. "$(dirname "${BASH_SOURCE[0]}")/../guard-roles.sh"

: "${PROJECT_ID:?set PROJECT_ID}"
: "${REGION:?set REGION}"
: "${SERVICES:?set SERVICES to the services to watch, separated by spaces}"
WATCHER_NAME="${WATCHER_NAME:-deploy-guard-watch}"
WATCHER_SA="${WATCHER_NAME}@${PROJECT_ID}.iam.gserviceaccount.com"
WATCHER="serviceAccount:${WATCHER_SA}"

if ! gcloud iam service-accounts describe "$WATCHER_SA" --project "$PROJECT_ID" >/dev/null 2>&1; then
  gcloud iam service-accounts create "$WATCHER_NAME" --project "$PROJECT_ID" \
    --display-name "deploy-guard watch"
fi

grant_guard "$WATCHER" watch watch

if [ -n "${DEPLOYER:-}" ]; then
  # Creating a job, worker pool or service that runs as the watcher's account.
  gcloud iam service-accounts add-iam-policy-binding "$WATCHER_SA" --project "$PROJECT_ID" \
    --member "$DEPLOYER" --role roles/iam.serviceAccountUser >/dev/null
fi
if [ -n "${STARTER:-}" ]; then
  # `gcloud run jobs execute` (without overrides) needs roles/run.invoker on the job.
  : "${JOB:?set JOB to the watch job STARTER may execute}"
  gcloud run jobs add-iam-policy-binding "$JOB" --project "$PROJECT_ID" --region "$REGION" \
    --member "$STARTER" --role roles/run.invoker >/dev/null
fi
