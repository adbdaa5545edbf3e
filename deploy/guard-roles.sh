# Sourced by deploy/watch/roles.sh and deploy/audit/roles.sh: the grants of a guard that
# reads a service's evidence and moves its traffic, and nothing broader. Not run on its own.
#
#   grant_guard MEMBER WHAT VERB
#
# MEMBER is the guard's IAM member (serviceAccount:...), WHAT names the script in its lines,
# VERB what the guard does to each service ("watch", "check"). Reads PROJECT_ID, REGION,
# SERVICES and PRIVATE (1: the services allow no unauthenticated calls). Every grant is on
# the narrowest resource that takes it; docs/permissions.md says why each one is there.

grant_guard() {
  local member="$1" what="$2" verb="$3"
  local project_number="" service runtime_sa
  # Evidence, project-level and read-only: logs (ListLogEntries and the live TailLogEntries
  # both need logging.logEntries.list) and metrics (monitoring.timeSeries.list).
  gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "$member" \
    --role roles/logging.viewer >/dev/null
  gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "$member" \
    --role roles/monitoring.viewer >/dev/null
  for service in $SERVICES; do
    # Read the service and its revisions, move its traffic, keep its annotations.
    gcloud run services add-iam-policy-binding "$service" --project "$PROJECT_ID" \
      --region "$REGION" --member "$member" --role roles/run.developer >/dev/null
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
      --member "$member" --role roles/iam.serviceAccountUser >/dev/null
    if [ "${PRIVATE:-0}" = 1 ]; then
      # The probes (and a watch's canary user) call the service with an ID token.
      gcloud run services add-iam-policy-binding "$service" --project "$PROJECT_ID" \
        --region "$REGION" --member "$member" --role roles/run.invoker >/dev/null
    fi
    echo "deploy-guard ${what}: ${member#serviceAccount:} may ${verb} ${service} (runtime identity ${runtime_sa})"
  done
}
