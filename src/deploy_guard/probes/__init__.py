"""Smoke probes: HTTP requests and WebSocket sessions against a revision.

The API the gate and ``deploy-guard probe`` use (import from the submodules;
this package imports nothing heavy on its own):

- :func:`deploy_guard.probes.runner.run_rule` / :func:`~deploy_guard.probes.runner.run_rules`:
  async generators of cumulative :class:`~deploy_guard.measurements.ProbeMeasurement`
  snapshots; consume them inside ``contextlib.aclosing`` so that stopping early
  closes every socket at once.
- :class:`deploy_guard.probes.target.Target`: base URL, headers, TLS choice, token.
- :func:`deploy_guard.probes.auth.resolve_token` with a
  :class:`~deploy_guard.probes.auth.TokenChoice`: the bearer token, held in a
  :class:`~deploy_guard.probes.auth.BearerToken` that never shows its value.
  Pass ``url=`` (what is probed, e.g. a tag URL) and ``audience=`` (the
  service URL an ID token must name; default: the origin of ``url``).

Modules: ``websocket`` (one session), ``http`` (one request), ``aggregate``
(pure: attempts -> snapshots, and merges of shards' snapshots), ``shard`` (which
workers a shard runs), ``template`` ({user} {session} {n}), ``runner``; for a session at
scale, ``admission`` (a few begin per loop turn) and ``deadline`` (one timer per worker).
"""
