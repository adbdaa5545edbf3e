"""The pure decision core: policy + measurements -> rule results -> verdict.

Imports only the standard library, :mod:`deploy_guard.measurements` and the
policy models. See :mod:`deploy_guard.judge.core` for the feeding protocol and
:mod:`deploy_guard.judge.verdict` for how a verdict is reached.
"""

from deploy_guard.judge.core import Judge, evaluate
from deploy_guard.judge.results import Action, RuleResult, RuleStatus, Verdict, VerdictStatus

__all__ = ["Action", "Judge", "RuleResult", "RuleStatus", "Verdict", "VerdictStatus", "evaluate"]
