"""``deploy-guard report``: render a saved JSON report as the HTML page, after the fact.

``check``, ``rollout`` and ``watch`` write the page themselves with ``--html``;
this renders any ``--report`` JSON file the same way (the page is made from the
report data alone), for a report kept from a pipeline run, or one written
before the page existed.
"""

from __future__ import annotations

import sys

import click

from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import redact_text

HELP = """Render REPORT.json (written by --report) as one self-contained HTML page.

\b
The page: the verdict and why, the rules, traffic before and after (each
step of a rollout, a watch's rollbacks), the timeline, and a picture of the
probe sessions: one lane per session (handshake, events, hold, close code),
the first failure and the decision marked, log matches and metric points on
the same time axis. Inline CSS and SVG, no script, nothing loaded from the
network: it opens anywhere, offline, years later.

\b
Exit codes: 0 written, 2 the report cannot be read (not JSON, not a
deploy-guard report) or the page cannot be written.

\b
Examples:
  deploy-guard report report.json --html report.html
  deploy-guard check --revision chat-agent-00002-abc --report r.json --html r.html
      (check, rollout and watch write the page themselves with --html)
"""


@click.command(name="report", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("report_json", metavar="REPORT.json", type=click.Path())
@click.option(
    "--html",
    "html_path",
    required=True,
    type=click.Path(),
    help="Write the HTML page here (folders are created).",
)
def report(report_json: str, html_path: str) -> None:
    from deploy_guard.report.html import read_report, write_html

    try:
        document = read_report(report_json)
        written = write_html(document, html_path)
    except ConfigError as exc:
        click.echo(f"error: {redact_text(str(exc))}", err=True)
        sys.exit(int(ExitCode.USAGE))
    except OSError as exc:
        click.echo(f"error: cannot write {html_path}: {exc.strerror or exc}", err=True)
        sys.exit(int(ExitCode.USAGE))
    click.echo(str(written))
