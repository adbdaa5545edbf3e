#!/usr/bin/env bash
# The three identities of the audit-log check, and the least each one needs.
#
#   PROJECT_ID=my-project REGION=europe-west1 SERVICES="chat-agent billing-api" \
#     bash deploy/audit/roles.sh
#
# - the trigger's (deploy-guard-audit-trigger): Eventarc delivers events with it and starts the
#   workflow: roles/eventarc.eventReceiver, roles/workflows.invoker;
# - the workflow's (deploy-guard-audit-workflow): runs the job with the event as an override:
#   roles/run.jobsExecutorWithOverrides on that one job, roles/run.viewer to follow the
#   execution it started;
# - the guard's (deploy-guard-audit), the job's identity: reads logs and metrics
#   (roles/logging.viewer, roles/monitoring.viewer), and on each service it guards reads the
#   service and moves its traffic (roles/run.developer) as the service's runtime identity
#   (roles/iam.serviceAccountUser on that account only).
#
# SERVICES are the services whose deploys are checked (the ones your policies' services: name);
# re-run with a new one added. Optional: PRIVATE=1 when they do not allow unauthenticated calls
# (the probes then need roles/run.invoker); DEPLOYER=user:you@example.com for whoever runs
# setup.sh, who must be able to act as the guard's and the workflow's accounts. Run it after
# setup.sh has created the job (the workflow's grant is on the job), or run it twice.
# docs/audit-checks.md says why each grant is there. Re-running it is harmless.
set -euo pipefail
# shellcheck source=../guard-roles.sh
. "$(dirname "${BASH_SOURCE[0]}")/../guard-roles.sh"

: "${PROJECT_ID:?set PROJECT_ID}"
: "${REGION:?set REGION}"
: "${SERVICES:?set SERVICES to the services whose deploys are checked, separated by spaces}"
JOB="${JOB:-deploy-guard-audit}"
GUARD_SA="deploy-guard-audit@${PROJECT_ID}.iam.gserviceaccount.com"
WORKFLOW_SA="deploy-guard-audit-workflow@${PROJECT_ID}.iam.gserviceaccount.com"
TRIGGER_SA="deploy-guard-audit-trigger@${PROJECT_ID}.iam.gserviceaccount.com"

for account in "$GUARD_SA" "$WORKFLOW_SA" "$TRIGGER_SA"; do
  if ! gcloud iam service-accounts describe "$account" --project "$PROJECT_ID" >/dev/null 2>&1; then
    gcloud iam service-accounts create "${account%%@*}" --project "$PROJECT_ID" \
      --display-name "deploy-guard audit-log check"
  fi
done

# The trigger: receive the audit events, start the workflow.
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:${TRIGGER_SA}" \
  --role roles/eventarc.eventReceiver >/dev/null
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:${TRIGGER_SA}" \
  --role roles/workflows.invoker >/dev/null

# The workflow: run this one job with an override (run.jobs.runWithOverrides), follow it.
if gcloud run jobs describe "$JOB" --project "$PROJECT_ID" --region "$REGION" >/dev/null 2>&1; then
  gcloud run jobs add-iam-policy-binding "$JOB" --project "$PROJECT_ID" --region "$REGION" \
    --member "serviceAccount:${WORKFLOW_SA}" --role roles/run.jobsExecutorWithOverrides >/dev/null
else
  echo "deploy-guard audit: job $JOB not found yet: run setup.sh, then this script again" >&2
fi
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:${WORKFLOW_SA}" \
  --role roles/run.viewer >/dev/null

# The guard: evidence (project-level, read-only), then each service it may roll back.
grant_guard "serviceAccount:${GUARD_SA}" audit check

if [ -n "${DEPLOYER:-}" ]; then
  # Creating a job and a workflow that run as these accounts.
  for account in "$GUARD_SA" "$WORKFLOW_SA"; do
    gcloud iam service-accounts add-iam-policy-binding "$account" --project "$PROJECT_ID" \
      --member "$DEPLOYER" --role roles/iam.serviceAccountUser >/dev/null
  done
fi
