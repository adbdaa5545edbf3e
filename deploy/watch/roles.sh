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

# Evidence, project-level and read-only: logs (ListLogEntries and the live TailLogEntries
# both need logging.logEntries.list) and metrics (monitoring.timeSeries.list).
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "$WATCHER" \
  --role roles/logging.viewer >/dev/null
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "$WATCHER" \
  --role roles/monitoring.viewer >/dev/null

project_number=""
for service in $SERVICES; do
  # Read the service and its revisions, move its traffic, keep its annotations.
  gcloud run services add-iam-policy-binding "$service" --project "$PROJECT_ID" \
    --region "$REGION" --member "$WATCHER" --role roles/run.developer >/dev/null
  # A traffic change is an UpdateService: act as the service's runtime identity (that one
  # account, never project-wide). No runtime account set means the default compute one.
  runtime_sa="$(gcloud run services describe "$service" --project "$PROJECT_ID" \
    --region "$REGION" --format 'value(spec.template.spec.serviceAccountName)')"
  if [ -z "$runtime_sa" ]; then
    if [ -z "$project_number" ]; then
      project_number="$(gcloud projects describe "$PROJECT_ID" --format 'value(projectNumber)')"
    fi
    runtime_sa="${project_number}-compute@developer.gserviceaccount.com"
  fi
  gcloud iam service-accounts add-iam-policy-binding "$runtime_sa" --project "$PROJECT_ID" \
    --member "$WATCHER" --role roles/iam.serviceAccountUser >/dev/null
  if [ "${PRIVATE:-0}" = 1 ]; then
    # The probes and the canary user call the service with an ID token.
    gcloud run services add-iam-policy-binding "$service" --project "$PROJECT_ID" \
      --region "$REGION" --member "$WATCHER" --role roles/run.invoker >/dev/null
  fi
  echo "deploy-guard watch: ${WATCHER_SA} may watch ${service} (runtime identity ${runtime_sa})"
done

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
