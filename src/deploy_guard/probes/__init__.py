"""Smoke probes: HTTP requests and WebSocket sessions against a revision."""
