"""The emulator's HTTP/JSON front: what ``gcloud`` (and ``curl``) talk to.

The guard and the Python clients speak gRPC to the emulator; ``gcloud`` speaks
REST. ``gcloud run`` uses the Cloud Run Admin API **v1**, the Knative-style
resources (``apis/serving.knative.dev/v1/namespaces/PROJECT/services/...``),
``gcloud logging read`` calls Logging's ``POST /v2/entries:list``, and Cloud
Monitoring's ``GET /v3/projects/P/timeSeries`` is there for scripts. This
package serves those forms over the SAME state as the gRPC APIs: a v1 write is
translated into the v2 request and goes down the v2 code path (validation,
reconciliation, long-running operations, revision processes),
so everything the emulator promises over gRPC (not Ready at once, the route
delay, Cloud Run's limits, a revision that closes with 1011) holds here too.

Why a proxy: ``gcloud run`` does not call the endpoint it is given; it derives
a regional host by prefixing ``REGION-`` to it (``DeriveRegionalEndpoint`` in
gcloud's ``command_lib/run/connection_context.py``), and
``us-central1-127.0.0.1`` resolves nowhere. gcloud's own HTTP proxy settings
(``CLOUDSDK_PROXY_TYPE=http`` and the address and port of this front) make it
send every request here with the absolute URL as the request target, which an
HTTP server routes by path; the front ignores the host (it only reads the
region from it), so no ``/etc/hosts`` entry or DNS trick is needed, and no
request of gcloud's can leave loopback.

Modules: :mod:`.errors` (Google's JSON error bodies), :mod:`.knative_in` and
:mod:`.knative_out` (pure v1 <-> v2 translation), :mod:`.run_v1` (the v1
routes), :mod:`.http` (a request as the v2 path reads it), :mod:`.v1_audit`
(the v1 writes' audit entries), :mod:`.observability` (Logging and
Monitoring), :mod:`.server` (the aiohttp app), :mod:`.gcloud_env` (the
``export`` lines for a shell).
"""
