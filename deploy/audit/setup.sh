#!/usr/bin/env bash
# A check on every deploy: the job, the workflow and the Eventarc triggers (roles.sh makes the
# identities they run as).
#
#   export PROJECT_ID=my-project REGION=europe-west1
#   export IMAGE=europe-west1-docker.pkg.dev/my-project/cloud-run/deploy-guard-policies:0.1.0
#   SERVICES="chat-agent billing-api" bash deploy/audit/roles.sh
#   bash deploy/audit/setup.sh
#   SERVICES="chat-agent billing-api" bash deploy/audit/roles.sh   # the job exists now
#
# Cloud Run writes an Admin Activity audit entry for every service write (those logs are always
# on). One trigger per method (an Eventarc filter matches exactly): v1 is what `gcloud run
# deploy` and the console call (CreateService, ReplaceService), v2 what client libraries and
# Terraform call (CreateService, UpdateService). The triggers are in REGION, the services'
# region: a regional audit-log trigger receives the events of resources there (LOCATION=global
# receives every region's). Each starts the workflow (workflow.yaml), which runs the job
# (job.yaml) with the event. Re-running it updates the job and the workflow and keeps the
# triggers.
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
: "${REGION:?set REGION}"
: "${IMAGE:?set IMAGE to the deploy-guard image with your policies in /policies}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCATION="${LOCATION:-$REGION}"
JOB="deploy-guard-audit"
WORKFLOW="deploy-guard-audit"
GUARD_SA="deploy-guard-audit@${PROJECT_ID}.iam.gserviceaccount.com"
WORKFLOW_SA="deploy-guard-audit-workflow@${PROJECT_ID}.iam.gserviceaccount.com"
TRIGGER_SA="deploy-guard-audit-trigger@${PROJECT_ID}.iam.gserviceaccount.com"
#: trigger name -> the method it listens to
TRIGGERS=(
  "deploy-guard-run-v1-create=google.cloud.run.v1.Services.CreateService"
  "deploy-guard-run-v1-replace=google.cloud.run.v1.Services.ReplaceService"
  "deploy-guard-run-v2-create=google.cloud.run.v2.Services.CreateService"
  "deploy-guard-run-v2-update=google.cloud.run.v2.Services.UpdateService"
)

gcloud services enable run.googleapis.com eventarc.googleapis.com workflows.googleapis.com \
  workflowexecutions.googleapis.com --project "$PROJECT_ID"

# 1. The job that checks (it runs only when the workflow starts it).
manifest="$(mktemp)"
trap 'rm -f "$manifest"' EXIT
export REGION IMAGE GUARD_SA
envsubst '${REGION} ${IMAGE} ${GUARD_SA}' < "$HERE/job.yaml" > "$manifest"
gcloud run jobs replace "$manifest" --project "$PROJECT_ID" --region "$REGION"

# 2. The workflow that starts it with the event.
gcloud workflows deploy "$WORKFLOW" --project "$PROJECT_ID" --location "$REGION" \
  --source "$HERE/workflow.yaml" --service-account "$WORKFLOW_SA" \
  --set-env-vars "JOB_NAME=${JOB},JOB_REGION=${REGION}"

# 3. The triggers on Cloud Run's audit log.
for pair in "${TRIGGERS[@]}"; do
  name="${pair%%=*}"
  method="${pair#*=}"
  if gcloud eventarc triggers describe "$name" --project "$PROJECT_ID" \
    --location "$LOCATION" >/dev/null 2>&1; then
    echo "deploy-guard audit: trigger $name is there"
    continue
  fi
  gcloud eventarc triggers create "$name" --project "$PROJECT_ID" --location "$LOCATION" \
    --destination-workflow "$WORKFLOW" --destination-workflow-location "$REGION" \
    --event-filters "type=google.cloud.audit.log.v1.written" \
    --event-filters "serviceName=run.googleapis.com" \
    --event-filters "methodName=${method}" \
    --service-account "$TRIGGER_SA"
done
echo "deploy-guard audit: every deploy in ${PROJECT_ID} (${LOCATION}) now starts a check"
