"""Actions on a service's traffic: the plans, the one executor, the rollback target.

The plans are pure (:mod:`deploy_guard.gcp.traffic`: which split, which tag);
:mod:`~deploy_guard.actions.executor` is the only place the check writes
traffic (write, re-read, verify, refuse to clobber, record annotations, add and
remove the temporary tag); :mod:`~deploy_guard.actions.target` chooses where a
rollback goes, for ``check`` and ``deploy-guard rollback`` alike.
"""
