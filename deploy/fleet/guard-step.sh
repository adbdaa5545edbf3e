#!/usr/bin/env bash
# One guard of a fleet, as a Cloud Build step: run the command, keep its exit code.
#
#   bash deploy/fleet/guard-step.sh NAME deploy-guard check --fleet FILE --service S ...
#
# The exit code goes to deploy-guard/NAME.code (under the step's working directory,
# /workspace) and the step itself succeeds, so that one guard's fail never cuts another
# short mid-check: cloudbuild-fleet.yaml's verdict step fails the build once every guard
# has finished. A SIGTERM or SIGINT (a cancelled build) is passed on to the guard, which
# stops at a safe point and writes its report: bash would not pass it on by itself.
set -u
name="$1"
shift
mkdir -p deploy-guard
guard=""
stopping=""
trap '[ -n "$guard" ] && kill -TERM "$guard" 2>/dev/null && stopping=1' TERM INT
"$@" &
guard=$!
wait "$guard"
code=$?
while [ -n "$stopping" ]; do  # a signal cut the wait short: the guard goes on
  stopping=""
  wait "$guard"
  code=$?
done
echo "$code" > "deploy-guard/$name.code"
echo "deploy-guard: $name exit code $code"
exit 0
