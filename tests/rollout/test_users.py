"""Real users against the emulator: what they see is what the router split and Google records.

A rollout step is judged on the candidate's share of real traffic, through
Cloud Monitoring and Cloud Logging, per revision. These tests pin the ground
the rollout tests stand on: the users' helper (``tests/users.py``) sees the
split the router was given, exactly, and every answer it counts is in the
candidate's or the baseline's request_count, request_latencies and request
logs, by revision and response class, read with the official clients.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from deploy_guard.gcp.metrics import CloudMonitoring
from deploy_guard.judge.metric import assess_metric
from deploy_guard.policy.load import load_file
from users import Sessions, Users, path_for
from waiting import wait_until

POLICIES = Path(__file__).parent / "policies"
TOOL = {"APP_FAIL_PATH": "/api/tool", "APP_FAIL_EVERY": "3"}


# -- reading what Google recorded ---------------------------------------------------


def request_counts(clients: Any, project: str, revision: str) -> dict[str, int]:
    """request_count of one revision by response_code_class, over the last 10 minutes."""
    now = datetime.now(UTC)
    series = clients.metrics().list_time_series(
        request={
            "name": f"projects/{project}",
            "filter": 'metric.type="run.googleapis.com/request_count" AND '
            f'resource.labels.revision_name="{revision}"',
            "interval": {"start_time": now - timedelta(minutes=10), "end_time": now},
            "aggregation": {
                "alignment_period": {"seconds": 660},
                "per_series_aligner": "ALIGN_DELTA",
                "cross_series_reducer": "REDUCE_SUM",
                "group_by_fields": ["metric.labels.response_code_class"],
            },
        }
    )
    return {
        s.metric.labels["response_code_class"]: sum(p.value.int64_value for p in s.points)
        for s in series
    }


def latency(clients: Any, project: str, revision: str, aligner: str) -> tuple[int, float]:
    """(requests, their latency in ms by ``aligner``) of one revision's request_latencies."""
    now = datetime.now(UTC)
    request = {
        "name": f"projects/{project}",
        "filter": 'metric.type="run.googleapis.com/request_latencies" AND '
        f'resource.labels.revision_name="{revision}"',
        "interval": {"start_time": now - timedelta(minutes=10), "end_time": now},
        "aggregation": {"alignment_period": {"seconds": 660}, "per_series_aligner": "ALIGN_DELTA"},
    }
    metrics = clients.metrics()
    count = sum(
        p.value.distribution_value.count
        for s in metrics.list_time_series(request=request)
        for p in s.points
    )
    request["aggregation"] = {
        "alignment_period": {"seconds": 660},
        "per_series_aligner": aligner,
        "cross_series_reducer": aligner.replace("ALIGN_", "REDUCE_"),
    }
    series = metrics.list_time_series(request=request)
    values = [p.value.double_value for s in series for p in s.points]
    return count, max(values, default=0.0)


def request_logs(clients: Any, project: str, revision: str, extra: str = "") -> Counter[int]:
    """Statuses of one revision's request logs (``run.googleapis.com/requests``)."""
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    entries = clients.logging().list_log_entries(
        request={
            "resource_names": [f"projects/{project}"],
            "filter": f'timestamp>="{since}" AND resource.labels.revision_name="{revision}" '
            f'AND log_id("run.googleapis.com/requests"){extra}',
            "page_size": 1000,
        }
    )
    return Counter(e.http_request.status for e in entries)


def by_class(outcomes: Counter[str]) -> dict[str, int]:
    """The users' outcomes as Cloud Monitoring classes them (a WebSocket is a 101)."""
    out: Counter[str] = Counter()
    for outcome, n in outcomes.items():
        out["1xx" if outcome.startswith("ws:") else f"{outcome[0]}xx"] += n
    return dict(out)


def statuses(outcomes: Counter[str]) -> Counter[int]:
    """The users' outcomes as request logs' statuses."""
    out: Counter[int] = Counter()
    for outcome, n in outcomes.items():
        out[101 if outcome.startswith("ws:") else int(outcome)] += n
    return out


# -- the helper on its own ----------------------------------------------------------


@pytest.mark.parametrize("paths", [["/", "/api/tool"], ["/a", "/b", "/c"]])
def test_every_revision_gets_every_path_whatever_the_split(paths: list[str]) -> None:
    """A fixed rotation would send a 10 % candidate one path only; the sequence never does."""
    for every in range(2, 21):  # the candidate's requests: every 2nd .. every 20th
        for offset in range(every):
            mine = Counter(path_for(offset + k * every, paths) for k in range(300))
            share = 300 / len(paths)
            assert set(mine) == set(paths)
            assert all(abs(n - share) <= 0.1 * share for n in mine.values()), (every, mine)


def test_users_with_nobody_listening_count_errors_and_stop() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with Users(url, rate=50.0, paths=["/x"], websocket=Sessions(every=0.1)) as users:
        wait_until(lambda: sum(users.errors().values()) >= 10, what="refused requests")
        with pytest.raises(TimeoutError, match="answers missing"):
            users.wait_for(1, within=0.2)
    assert users.total() == 0
    assert users.by_revision() == {}
    assert set(users.errors()) == {
        "GET /x: ClientConnectorError",
        "WS /ws: ClientConnectorError",
    }


# -- the revision app's knobs, through the candidate's tag URL ----------------------


def test_revision_app_knobs_fail_one_path_in_three_and_close_sessions(
    shop: Any, baseline: str
) -> None:
    cand = shop.candidate({**TOOL, "APP_WS_CLOSE": "1011"})
    url = shop.tag_url()
    with httpx.Client(timeout=10) as http:
        tool = [http.get(url + "/api/tool") for _ in range(6)]
        home = [http.get(url + "/").status_code for _ in range(3)]
    assert [r.status_code for r in tool] == [200, 200, 500, 200, 200, 500]
    assert {r.json()["revision"] for r in tool} == {cand}  # failures name the revision too
    assert home == [200, 200, 200]
    with connect(url.replace("http", "ws") + "/ws") as ws:
        assert '"hello"' in str(ws.recv())
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011


# -- real users through the service URL ---------------------------------------------


@pytest.mark.fault(
    "metrics",
    "real users of a 90/10 split, HTTP and WebSocket, through the service URL",
    "each revision's request_count by class, request_latencies and request logs "
    "hold exactly the answers the users got from it",
)
def test_a_90_10_split_is_what_users_see_and_what_google_records(
    shop: Any, baseline: str, gcp_clients: Any, emulator: Any
) -> None:
    cand = shop.candidate({"V": "2"})
    assert shop.route({baseline: 90, cand: 10}) == {baseline: 90, cand: 10}
    paths = ["/", "/api/tool"]
    with Users(shop.url, rate=40.0, paths=paths, websocket=Sessions(every=0.25)) as users:
        users.wait_for(200, within=30)
    seen = users.by_revision()
    assert set(seen) == {baseline, cand}
    assert users.errors() == Counter()
    # smooth weighted round robin: of N connections the candidate got N/10, to one
    total = users.total()
    assert abs(sum(seen[cand].values()) - total / 10) <= 1, seen
    for rev in (baseline, cand):
        assert set(seen[rev]) == {"200", "ws:1000"}, seen
        for path in paths:  # every path reached both revisions
            assert users.by_revision(path)[rev]["200"] > 0

    project = emulator.project
    for rev in (baseline, cand):
        expected = by_class(seen[rev])
        wait_until(
            lambda rev=rev, expected=expected: (
                request_counts(gcp_clients, project, rev) == expected
            ),
            what=f"request_count of {rev} == {expected}",
        )
        count, _p99 = latency(gcp_clients, project, rev, "ALIGN_PERCENTILE_99")
        assert count == sum(seen[rev].values())
        logged = wait_until(
            lambda rev=rev: (
                found
                if (found := request_logs(gcp_clients, project, rev)) == statuses(seen[rev])
                else None
            ),
            what=f"request logs of {rev}",
        )
        assert set(logged) == {101, 200}


@pytest.mark.fault(
    "metrics",
    "a 10 % candidate fails 1 in 3 requests of /api/tool; its probes of / pass",
    "only the candidate's request_count has 5xx (exactly the users' 500s) and the "
    "error-rate rule of error-rate.yaml fails it against the baseline",
)
async def test_one_failing_endpoint_shows_in_the_candidate_metrics_only(
    shop: Any, baseline: str, gcp_clients: Any, emulator: Any
) -> None:
    since = datetime.now(UTC)
    cand = shop.candidate(TOOL)
    async with httpx.AsyncClient() as http:  # the tag URL's probes of / see nothing wrong
        assert {(await http.get(shop.tag_url() + "/")).status_code for _ in range(5)} == {200}
    shop.route({baseline: 90, cand: 10})
    with Users(shop.url, rate=40.0, paths=["/", "/api/tool"]) as users:
        users.wait_for(300, within=30)

    tool = users.by_revision("/api/tool")
    assert tool[cand]["500"] == sum(tool[cand].values()) // 3  # every 3rd: 33 %
    assert tool[cand]["500"] > 0
    assert set(users.by_revision("/")[cand]) == {"200"}
    assert set(users.by_revision()[baseline]) == {"200"}
    project = emulator.project
    probes = {baseline: {}, cand: {"2xx": 5}}  # the tag URL's requests count too
    for rev in (baseline, cand):
        expected = dict(Counter(by_class(users.by_revision()[rev])) + Counter(probes[rev]))
        wait_until(
            lambda rev=rev, expected=expected: (
                request_counts(gcp_clients, project, rev) == expected
            ),
            what=f"request_count of {rev}",
        )
    assert "5xx" not in request_counts(gcp_clients, project, baseline)

    policy = load_file(POLICIES / "error-rate.yaml")
    rule = policy.rule("error-rate")
    source = CloudMonitoring(
        gcp_clients,
        project=project,
        service="shop",
        revision=cand,
        rules=[rule],
        since=since,
        baseline=[baseline],
    )
    (measured,) = await source.measure(complete=True)
    assert measured.error is None, measured.error
    assert measured.baseline_value == 0.0
    assert measured.requests == sum(users.by_revision()[cand].values()) + 5
    assert measured.value == tool[cand]["500"] / measured.requests
    verdict = assess_metric(rule, measured)
    assert verdict.outcome == "fail", verdict


def test_a_1011_candidate_closes_every_users_session_and_logs_it(
    shop: Any, baseline: str, gcp_clients: Any, emulator: Any
) -> None:
    cand = shop.candidate({"APP_WS_CLOSE": "1011"})
    shop.route({baseline: 50, cand: 50})
    sessions = Sessions("/ws", messages=["hi"], every=0.05)
    with Users(shop.url, rate=5.0, websocket=sessions) as users:
        wait_until(lambda: users.by_revision("/ws").get(cand, {}).get("ws:1011", 0) >= 10)
    ws = users.by_revision("/ws")
    assert set(ws[cand]) == {"ws:1011"}
    assert set(ws[baseline]) == {"ws:1000"}
    project = emulator.project
    crashes = wait_until(
        lambda: (
            found
            if sum(
                (
                    found := request_logs(gcp_clients, project, cand, " AND httpRequest.status=101")
                ).values()
            )
            == ws[cand]["ws:1011"]
            else None
        ),
        what="the candidate's WebSocket request logs",
    )
    assert crashes == Counter({101: ws[cand]["ws:1011"]})


def test_a_slow_candidate_shows_in_its_own_latency(
    shop: Any, baseline: str, gcp_clients: Any, emulator: Any
) -> None:
    cand = shop.candidate({"APP_SLOW_MS": "300"})
    shop.route({baseline: 50, cand: 50})
    with Users(shop.url, rate=20.0) as users:
        users.wait_for(20, within=30)
    seen = users.by_revision()
    project = emulator.project
    for rev in (baseline, cand):
        wait_until(
            lambda rev=rev: (
                latency(gcp_clients, project, rev, "ALIGN_PERCENTILE_50")[0]
                == sum(seen[rev].values())
            ),
            what=f"request_latencies of {rev}",
        )
    assert latency(gcp_clients, project, cand, "ALIGN_PERCENTILE_50")[1] >= 300
    assert latency(gcp_clients, project, baseline, "ALIGN_PERCENTILE_50")[1] < 300


def test_sessions_still_open_are_closed_cleanly_when_users_stop(shop: Any, baseline: str) -> None:
    """Leaving the block ends hour-long sessions at once, each closed with 1000."""
    with Users(shop.url, rate=1.0, websocket=Sessions(every=0.05, hold=3600)) as users:
        wait_until(lambda: users.open_sessions() >= 3, what="three sessions open")
        assert users.by_revision("/ws") == {}  # none ended on its own
    ws = users.by_revision("/ws")
    assert set(ws) == {baseline}
    assert set(ws[baseline]) == {"ws:1000"}
    assert ws[baseline]["ws:1000"] >= 3
    assert users.open_sessions() == 0


@pytest.mark.parametrize(
    ("name", "env", "code", "outcomes"),
    [
        (
            "healthy.yaml",
            {},
            3,  # no real users through a tag URL: the metric has no data (inconclusive)
            {"home": "pass", "ws-session": "pass", "no-crash-logs": "pass"}
            | {"error-rate": "no_data"},
        ),
        ("error-rate.yaml", TOOL, 3, {"home": "pass", "error-rate": "no_data"}),
        ("ws-1011.yaml", {"APP_WS_CLOSE": "1011"}, 1, {"ws-session": "fail"}),
    ],
)
def test_the_policies_probes_through_the_tag_url(
    shop: Any,
    baseline: str,
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    env: dict[str, str],
    code: int,
    outcomes: dict[str, str],
) -> None:
    """What a check through the tag URL alone sees: the probes pass (only ws-1011 fails),
    and the metric rules, which need real users, have no data: inconclusive, never a pass.
    That is what rollout's steps are for (its stage before traffic leaves metric rules out)."""
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    monkeypatch.setenv("DEPLOY_GUARD_EMULATOR_HOST", emulator.address)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", emulator.project)
    monkeypatch.setenv("CLOUDSDK_RUN_REGION", emulator.region)
    cand = shop.candidate(env)
    report = tmp_path / "report.json"
    args = ["check", "--revision", cand, "--policy", str(POLICIES / name), "--report", str(report)]
    result = CliRunner().invoke(cli, [*args, "--log-interval", "0.5s"], catch_exceptions=False)
    doc = json.loads(report.read_text())
    seen = {r["rule"]: r["status"] for r in doc["rules"]}
    assert result.exit_code == code, seen
    assert {rule: seen[rule] for rule in outcomes} == outcomes


@pytest.mark.parametrize("name", ["healthy.yaml", "error-rate.yaml", "ws-1011.yaml"])
def test_the_rollout_policies_load_with_short_real_steps(name: str) -> None:
    policy = load_file(POLICIES / name)
    assert policy.rollout is not None
    assert [s.percent for s in policy.rollout.steps] == [10, 50]
    assert all(s.duration > policy.rollout.metric_lag for s in policy.rollout.steps)
    assert policy.applies_to("shop")


# -- the fixtures and policies with the real command --------------------------------


def test_a_healthy_candidate_walks_to_100_under_real_users(
    shop: Any, baseline: str, rollout: Any
) -> None:
    cand = shop.candidate({"V": "2"}, tag=None)
    with Users(shop.url, rate=40.0, paths=["/", "/api/tool"], websocket=Sessions()) as users:
        code, doc = rollout(cand)
    assert code == 0, doc.get("reasons")
    assert shop.serving() == {cand: 100}
    assert [(s["phase"], s["percent"], s["status"]) for s in doc["steps"]] == [
        ("tag", 0, "pass"),
        ("step", 10, "pass"),
        ("step", 50, "pass"),
        ("promote", 100, "pass"),
    ]
    seen = users.by_revision()
    assert set(seen) == {baseline, cand}  # real users met the candidate during its steps
    assert all(set(outcomes) <= {"200", "ws:1000"} for outcomes in seen.values()), seen
    assert users.errors() == Counter()


def test_a_1011_candidate_never_reaches_a_real_user(shop: Any, baseline: str, rollout: Any) -> None:
    cand = shop.candidate({"APP_WS_CLOSE": "1011"}, tag=None)
    with Users(shop.url, rate=10.0, websocket=Sessions(every=0.2)) as users:
        code, doc = rollout(cand, policy="ws-1011.yaml")
    assert code == 1
    assert shop.serving() == {baseline: 100}
    assert [(s["phase"], s["status"]) for s in doc["steps"]] == [
        ("tag", "fail"),
        ("step", "pending"),
        ("step", "pending"),
        ("promote", "pending"),
    ]
    assert set(users.by_revision()) == {baseline}
    assert set(users.by_revision("/ws")[baseline]) == {"ws:1000"}


def test_one_failing_endpoint_is_rolled_back_at_the_first_step(
    shop: Any, baseline: str, rollout: Any
) -> None:
    cand = shop.candidate(TOOL, tag=None)
    with Users(shop.url, rate=40.0, paths=["/", "/api/tool"]) as users:
        code, doc = rollout(cand, policy="error-rate.yaml")
    assert code == 1, doc.get("reasons")
    assert shop.serving() == {baseline: 100}
    assert [(s["phase"], s["percent"], s["status"]) for s in doc["steps"]][:2] == [
        ("tag", 0, "pass"),
        ("step", 10, "fail"),
    ]
    assert users.by_revision("/api/tool")[cand]["500"] > 0
