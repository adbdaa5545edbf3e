"""The ``--realistic`` profile: Google Cloud's delays and partial answers, on purpose.

By default the emulator answers at once: a log line is listed the moment it is
printed, a request is in ``request_count`` the moment it ends. Google Cloud is
slower, and a guard tuned against an instant emulator passes revisions it has
not really seen. The profile turns on, together:

- **Cloud Logging ingestion delay** (``logs_delay_s``, 3 s): an entry is
  listed only that long after it arrived (usually seconds on Google Cloud,
  with no documented bound).
- **Cloud Monitoring sampling and reporting lag** (``metric_sample_period_s``,
  60 s, ``metric_min_lag_s``, 30 s, and ``metric_max_lag_s``, 180 s): Cloud
  Run's request metrics are "Sampled every 60 seconds. After sampling, data is
  not visible for up to 180 seconds". A sampling period's requests become
  visible together, after the period closed plus a lag drawn per period and
  series between the two (Google documents no minimum; 30 s is a guess on
  the kind side).
- **Route delay** (``route_delay_s``, 2 s): a new revision is Ready that long
  before the service routes to it and stops reconciling.
- **Empty pages** (``empty_page_ratio``, 0.1): that share of ``ListLogEntries``
  pages come back empty with a ``next_page_token`` ("the search found no log
  entries so far but it did not have time to search all the possible log
  entries", ``google/logging/v2/logging.proto``).

Every random draw comes from ``seed``, so a run can be repeated exactly. Tests
pass a :class:`Realism` with short durations (``Realism(metric_sample_period_s=1,
metric_max_lag_s=2, ...)``) so they run in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy_guard.errors import ConfigError


@dataclass(frozen=True)
class Realism:
    """The profile's numbers (defaults: Google Cloud's, as documented or observed)."""

    logs_delay_s: float = 3.0
    metric_sample_period_s: float = 60.0
    metric_min_lag_s: float = 30.0
    metric_max_lag_s: float = 180.0
    route_delay_s: float = 2.0
    empty_page_ratio: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("logs_delay_s", "metric_min_lag_s", "route_delay_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"realistic profile: {name} must not be negative")
        if self.metric_max_lag_s < self.metric_min_lag_s:
            raise ConfigError("realistic profile: metric_max_lag_s is below metric_min_lag_s")
        if self.metric_sample_period_s <= 0:
            raise ConfigError("realistic profile: metric_sample_period_s must be positive")
        if not 0.0 <= self.empty_page_ratio <= 1.0:
            raise ConfigError(
                "realistic profile: empty_page_ratio must be between 0 and 1 "
                f"(got {self.empty_page_ratio:g}); 1 makes every other page empty"
            )
