"""A local Cloud Run Admin v2, Cloud Logging v2 and Cloud Monitoring v3 emulator.

It speaks the APIs' real gRPC protocol, so the official client libraries talk
to it unchanged over a plain-text channel, and it runs each revision's
container command as a local process behind a router that behaves like Cloud
Run's front end (traffic split, tag URLs, HTTP and WebSocket pass-through).

The guard never imports from this package; only the ``deploy-guard emulator``
command, the tests, the demo and the benchmarks do.
"""
