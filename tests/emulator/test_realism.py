"""The ``--realistic`` profile: what it turns on, its numbers, and its command-line flags.

Its effects are tested where they act: empty pages in test_logging_api.py, sampled
and late points in test_monitoring_api.py, the guard under it in
tests/gate/test_realistic_e2e.py and tests/gate/test_sources_e2e.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.emulator.realism import Realism
from deploy_guard.emulator.server import Emulator
from deploy_guard.errors import ConfigError


def test_the_default_emulator_answers_at_once() -> None:
    emu = Emulator()
    assert emu.realism is None
    assert emu.logs.delay.total_seconds() == 0
    assert emu.logs.empty_page_ratio == 0
    assert emu.metrics.report_lag_s is None
    assert emu.admin.route_delay_s == 0


def test_realistic_uses_google_clouds_numbers_and_explicit_delays_win() -> None:
    emu = Emulator(realistic=True, seed=5)
    assert emu.realism == Realism(seed=5)
    assert emu.logs.delay.total_seconds() == 3.0
    assert emu.logs.empty_page_ratio == 0.1
    assert emu.metrics.sample_period_s == 60
    assert (emu.metrics.min_report_lag_s, emu.metrics.report_lag_s) == (30, 180)
    assert emu.metrics.seed == 5
    assert emu.admin.route_delay_s == 2.0
    own = Emulator(realistic=Realism(logs_delay_s=0.5), logs_delay=9, route_delay=4)
    assert own.logs.delay.total_seconds() == 9
    assert own.admin.route_delay_s == 4
    # 0 is a delay too: --realistic --logs-delay 0s isolates the other effects
    zero = Emulator(realistic=True, logs_delay=0, route_delay=0)
    assert zero.logs.delay.total_seconds() == 0
    assert zero.admin.route_delay_s == 0
    assert zero.logs.empty_page_ratio == 0.1


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("logs_delay_s", -1, "must not be negative"),
        ("metric_sample_period_s", 0, "must be positive"),
        ("metric_max_lag_s", 10, "below metric_min_lag_s"),
        ("empty_page_ratio", 1.5, "between 0 and 1"),
    ],
)
def test_a_profile_that_cannot_work_is_refused(field: str, value: float, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Realism(**{field: value})  # type: ignore[arg-type]


def test_seed_alone_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["emulator", "--seed", "3"])
    assert result.exit_code == 2
    assert "add --realistic" in result.output


def test_the_command_starts_realistic_and_its_help_says_what_that_does() -> None:
    out = CliRunner().invoke(cli, ["emulator", "--help"]).output
    assert "--realistic" in out
    assert "--seed" in out
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_guard", "emulator", "--realistic", "--seed", "9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        assert box, "no host line within 30 s"
        assert re.match(r"^DEPLOY_GUARD_EMULATOR_HOST=127\.0\.0\.1:\d+\n$", box[0])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "realistic=True" in err or '"realistic": true' in err
    # the profile's own numbers apply when no delay is given on the command line
    assert '"logs_delay_s": 3.0' in err, err
    assert '"route_delay_s": 2.0' in err, err


def test_on_the_command_line_an_explicit_0s_overrides_the_realistic_delays() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy_guard",
            "--log-format",
            "json",
            "emulator",
            "--realistic",
            "--logs-delay",
            "0s",
            "--route-delay",
            "0s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(30)
        assert box, "no host line within 30 s"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert '"realistic": true' in err, err
    assert '"logs_delay_s": 0.0' in err, err
    assert '"route_delay_s": 0.0' in err, err
