#!/usr/bin/env bash
# The fleet's verdict: every guard's exit code, then the build's.
#
#   bash deploy/fleet/verdict.sh NAME...
#
# Reads deploy-guard/NAME.code for each guard step (guard-step.sh writes them; a missing
# one is 4: that guard never finished). Exits with the code that needs a person most:
# 4 (an action failed or was refused), then any code deploy-guard does not document (130
# or 143: a guard stopped without a verdict), then 1 (a service failed and was left without
# its new revision), 3 (inconclusive), 2 (usage/config); 0 when every guard passed.
set -u
worst=0
rank() { case "$1" in 0) echo 0 ;; 2) echo 1 ;; 3) echo 2 ;; 1) echo 3 ;; 4) echo 5 ;; *) echo 4 ;; esac; }
for name in "$@"; do
  code="$(cat "deploy-guard/$name.code" 2>/dev/null || echo 4)"
  echo "deploy-guard: $name: exit code $code"
  if [ "$(rank "$code")" -gt "$(rank "$worst")" ]; then worst="$code"; fi
done
echo "deploy-guard: the fleet's exit code: $worst"
exit "$worst"
