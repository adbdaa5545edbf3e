"""What a second stop signal leaves behind: the reports, with the true state, and the code.

The first SIGINT/SIGTERM lets the gate clean up; a second one ends the process
at once (:func:`deploy_guard.signals.stop_now`). Before it does,
:class:`LastWord` writes the reports saying what may be left: a temporary tag, a
traffic write that was sent and never verified (:func:`write_in_flight`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from deploy_guard import signals
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport

log = get_logger("deploy_guard.check")


#: Traffic writes whose answer the check waits for: ``{kind}_requested`` until one of
#: ``{kind}_verified``, ``_refused``, ``_failed`` or ``_unverified`` is in the timeline.
_WRITES = ("rollback", "promote", "shift")


def write_in_flight(report: CheckReport) -> str | None:
    """The traffic write the check sent and has not seen answered ("rollback"), if any."""
    open_write = None
    for event in report.timeline.events:
        kind, _, step = event.event.rpartition("_")
        if kind in _WRITES and step == "requested":
            open_write = kind
        elif kind == open_write and step in ("verified", "refused", "failed", "unverified"):
            open_write = None
    return open_write


class LastWord:
    """What a second signal leaves behind: the reports, with the true state, and the code.

    :func:`deploy_guard.signals.stop_now` calls it (from a signal handler, in the
    main thread) before the process ends without clean-up. The exit code is the
    outcome's when one was decided (settled by the command, or by the gate
    before its clean-up), else 128 + the signal (130 SIGINT, 143 SIGTERM); the
    report says which, and names what may be left: a temporary tag, a traffic
    write that was sent and never verified.
    """

    def __init__(
        self,
        report: CheckReport,
        report_path: str | None,
        summary_path: str | None,
        html_path: str | None = None,
    ) -> None:
        self.report = report
        self.report_path, self.summary_path = report_path, summary_path
        self.html_path = html_path
        #: The running check (set by :func:`run`), None before it exists.
        self.gate: Any = None
        #: The live terminal view, closed before the process ends.
        self.view: Any = None
        #: The outcome line was printed (stdout): the last word does not repeat it.
        self.shown = False

    def __call__(self, name: str, settled: int | None) -> int:
        report = self.report
        state = self.gate.run_state if self.gate is not None else None
        notes: list[str] = []
        if settled is not None:
            code = settled  # the reports say it already; they are written again below
        elif state is not None and state.decided:
            code = report.exit_code
            notes.append(
                f"a second stop signal ({name}) cut the clean-up short; the decision stands"
            )
        else:
            code = signals.signal_exit_code(name)
            notes.append(self._interrupted(name, code))
        if state is not None and state.temp_tag and settled is None:
            notes.append(self._tag_left(state.temp_tag))
        if notes:
            report.error = "; ".join([*([report.error] if report.error else []), *notes])
        report.exit_code = code
        signals.exit_with(code)  # should a write below hang, the process still ends so
        report.timeline.add("second_signal", signal=name, exit_code=code)
        if not report.finished_at:
            from datetime import UTC, datetime

            report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        # first the files, then the output
        write_report_files(report, self.report_path, self.summary_path, self.html_path)
        log.warning("check_stopped", signal=name, exit_code=code)
        if self.view is not None:
            with contextlib.suppress(Exception):
                self.view.__exit__(None, None, None)
        if not self.shown:  # the outcome line a pipeline reads on stdout
            self.shown = True
            if self.view is not None:
                with contextlib.suppress(Exception):
                    self.view.final(report)
            else:
                click.echo(f"{report.verdict}: {redact_text(report.message)}")
        for note in notes:
            click.echo(f"note: {redact_text(note)}", err=True)
        return code

    def _interrupted(self, name: str, code: int) -> str:
        """Fill the report of a check stopped before its outcome was decided."""
        report = self.report
        first = signals.pending()
        after = f" after {first}" if first and first != name else ""
        if self.gate is None:
            report.verdict, report.action = "inconclusive", "none"
            report.message = f"the {report.command} did not start"
            return (
                f"stopped by a second stop signal ({name}{after}) before the check started; "
                "nothing was checked or changed"
            )
        kind = write_in_flight(report)
        what = f"stopped by a second stop signal ({name}{after}) before the check finished"
        if kind is None:
            report.message = f"{what} (exit {code})"
            return what
        service = report.service
        report.action = "unverified"  # sent, never read back: a person must look
        report.message = f"{what}: the {kind} was sent to Cloud Run and not verified (exit {code})"
        return (
            f"{what}: the {kind} traffic write was sent and not verified, so traffic may or "
            f"may not have moved; look at the service: gcloud run services describe {service} "
            f"--region {report.region} --project {report.project}"
        )

    def _tag_left(self, tag: str) -> str:
        report = self.report
        asked = report.timeline.first("tag_requested")
        until = asked.detail.get("until") if asked is not None else None
        # its record says this check holds it until then: status removes it only after
        how = (
            f"remove it with `deploy-guard status --service {report.service} "
            f"--remove-stale-tags` once its hold ends at {until}, or at once with: "
            if until
            else "remove it: "
        )
        return (
            f"the temporary tag {tag} may still be on {report.service}; {how}"
            f"gcloud run services update-traffic {report.service} --remove-tags {tag} "
            f"--region {report.region} --project {report.project}"
        )


def write_report_files(
    report: CheckReport,
    report_path: str | None,
    summary_path: str | None,
    html_path: str | None = None,
) -> None:
    """Write every report asked for, the JSON first; a file that cannot be written is said.

    The HTML page comes last, and whatever goes wrong rendering it is said too,
    never raised: the JSON report and the exit code must not depend on a picture.
    """
    from deploy_guard.report.json import write_json
    from deploy_guard.report.markdown import write_markdown

    for path, write in ((report_path, write_json), (summary_path, write_markdown)):
        if not path:
            continue
        try:
            write(report, path)
        except OSError as exc:
            click.echo(f"error: could not write {path}: {exc.strerror}", err=True)
    if html_path:
        try:
            from deploy_guard.report.html import write_html

            write_html(report, html_path)
        except OSError as exc:
            click.echo(f"error: could not write {html_path}: {exc.strerror}", err=True)
        except Exception as exc:  # a bug in the page must not cost the outcome
            log.error("html_report_failed", error=redact_text(f"{type(exc).__name__}: {exc}"))
            click.echo(f"error: could not render the HTML report {html_path}: {exc!r}", err=True)
