"""What runs a strategy: the session with the service, and the driver.

:mod:`~deploy_guard.runtime.session` resolves the candidate (policies that
apply, Ready, the split it will be judged against) and reaches it (its tag
URL, a temporary tag when it has none); :mod:`~deploy_guard.runtime.driver`
asks the strategy for the next move and makes it, owning time, signals,
clean-up and the report. :mod:`deploy_guard.gate` re-exports the names callers
used before the split.
"""
