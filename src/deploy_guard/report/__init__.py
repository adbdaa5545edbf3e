"""Renderers of a check's result: terminal view, JSON report and Markdown summary."""
