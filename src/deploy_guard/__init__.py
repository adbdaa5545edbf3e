"""deploy-guard: a deployment gate for Google Cloud Run.

After a revision rollout the guard probes the candidate (HTTP and WebSocket
sessions), reads Cloud Logging and Cloud Monitoring, judges the evidence by the
policies in ``policies/`` and, when the candidate fails, puts traffic back on
the revisions that served before it.
"""

__version__ = "0.1.0"
