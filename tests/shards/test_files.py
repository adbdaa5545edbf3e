"""Measurement files: written atomically, read back strictly, combined only when they belong."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from deploy_guard.commands.judge import NEVER_A_PASS, with_gaps
from deploy_guard.errors import ConfigError
from deploy_guard.judge import evaluate
from deploy_guard.measurements import Attempt, ProbeMeasurement
from deploy_guard.policy.load import parse_policy
from deploy_guard.policy.model import Policy
from deploy_guard.probes.aggregate import Aggregator
from deploy_guard.probes.runner import planned_attempts
from deploy_guard.probes.shard import Shard
from deploy_guard.shards import (
    RuleRun,
    ShardRecord,
    combine,
    destination,
    parse,
    policy_digest,
    read,
    rule_digest,
    write,
)

POLICY = """\
version: 1
name: files
services: ["svc"]
rules:
  - name: chat
    kind: websocket
    websocket:
      path: /ws
      scenario: [{expect: [hello]}]
      sessions: 9
      concurrency: 3
      success_ratio: 80%
"""


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY)


def shard(policy: Policy, index: int, count: int = 3, failing: tuple[int, ...] = ()) -> ShardRecord:
    """Shard ``index`` of ``count`` after its sessions ran; ``failing`` closed with 1011."""
    (rule,) = policy.rules
    me = Shard(index, count)
    agg = Aggregator("chat", "websocket", planned_attempts(rule, me))
    for k in me.workers(3):
        for n in range(k, 10, 3):
            bad = n in failing
            attempt = Attempt(
                ok=not bad,
                cause="close_code" if bad else None,
                detail=f"close code 1011 in session {n}" if bad else "",
                close_code=1011 if bad else 1000,
                durations={"total": 0.01 * n},
                user=f"user-{k}",
                session=f"s{n:02d}",
            )
            agg.add(attempt, 0.1 * n)
    return ShardRecord(
        policy=policy.name,
        policy_digest=policy_digest(policy),
        target="http://127.0.0.1:8080",
        shard=me,
        rules=(RuleRun("chat", "websocket", rule_digest(rule), 9),),
        measurements={"chat": agg.snapshot(complete=True)},
    )


def test_a_file_is_written_atomically_and_reads_back(policy: Policy, tmp_path: Path) -> None:
    record = shard(policy, 1, failing=(2,))
    path = tmp_path / "deep" / "shard-1.json"
    write(path, record)
    assert os.listdir(path.parent) == ["shard-1.json"]  # the temporary file was renamed
    back = read(path)
    assert back == record
    assert back.source == str(path)
    data = json.loads(path.read_text())
    assert (data["schema"], data["version"]) == ("deploy-guard/measurements", 1)
    assert data["shard"] == {"index": 1, "count": 3}
    assert data["policy"]["digest"].startswith("sha256:")
    assert "latencies" not in data["measurements"][0]  # read from the histograms, not stored


def test_merged_shards_judge_like_one_run(policy: Policy) -> None:
    parts = [shard(policy, k, failing=(2, 7)) for k in range(3)]
    whole = shard(policy, 0, count=1, failing=(2, 7))
    merged = combine(parts, policy)
    assert merged.missing == ()
    assert merged.gaps() == ()
    assert merged.measurements["chat"] == replace(whole.measurements["chat"])
    one, many = (
        evaluate(policy, [m]) for m in (whole.measurements["chat"], merged.measurements["chat"])
    )
    assert many.reasons == one.reasons == ("chat: 2 of 9 sessions closed with 1011; limit 1",)


def test_a_missing_shard_is_never_a_pass(policy: Policy) -> None:
    merged = combine([shard(policy, 0), shard(policy, 2)], policy)
    assert merged.missing == (1,)
    m = merged.measurements["chat"]
    assert (m.planned, m.done, m.complete) == (9, 6, False)
    verdict = with_gaps(evaluate(policy, merged.measurements.values()), merged.gaps())
    assert verdict.status == "inconclusive"
    assert verdict.reasons == (
        "chat: only 6 of 9 sessions finished before the check ended; 6 succeeded, 8 needed",
        "shard 1/3 missing: their attempts count as not run",
    )
    # with 50 %, the six sessions present would pass the rule: the gap holds it back
    lenient = parse_policy(POLICY.replace("80%", "50%"))
    merged = combine([shard(lenient, 0), shard(lenient, 2)], lenient)
    judged = evaluate(lenient, merged.measurements.values())
    assert judged.status == "pass"
    verdict = with_gaps(judged, merged.gaps())
    assert (verdict.status, verdict.action) == ("inconclusive", "hold")
    assert verdict.reasons[:2] == (
        "shard 1/3 missing: their attempts count as not run",
        NEVER_A_PASS,
    )


def test_a_failure_stands_with_a_shard_missing(policy: Policy) -> None:
    merged = combine([shard(policy, 0, failing=(1, 4))], policy)
    verdict = with_gaps(evaluate(policy, merged.measurements.values()), merged.gaps())
    assert verdict.status == "fail"
    assert verdict.reasons[-1] == "shards 1/3, 2/3 missing: their attempts count as not run"


def test_an_interrupted_shard_is_a_gap(policy: Policy) -> None:
    cut = shard(policy, 2)
    cut = replace(
        cut,
        interrupted="SIGTERM",
        measurements={"chat": replace(cut.measurements["chat"], complete=False)},
    )
    merged = combine([shard(policy, 0), shard(policy, 1), cut], policy)
    assert merged.gaps() == ("shard 2/3 (SIGTERM) stopped before their attempts finished",)


def _refused(policy: Policy, records: list[ShardRecord], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        combine(records, policy)


def test_shards_that_do_not_belong_together_are_refused(policy: Policy) -> None:
    a, b = shard(policy, 0), shard(policy, 1)
    _refused(policy, [a, a], "shard 0/3 given twice")
    _refused(policy, [a, replace(b, target="http://other")], "probed http://other")
    _refused(policy, [a, replace(b, shard=Shard(1, 4))], "is shard 1/4")
    other_rules = (RuleRun("chat", "websocket", "sha256:else", 9),)
    _refused(policy, [a, replace(b, rules=other_rules)], "other rules or overrides")
    two_runs = [replace(a, execution="job-y"), replace(b, execution="job-x")]
    _refused(policy, two_runs, "job execution job-x")
    _refused(policy, [replace(a, policy_digest="sha256:0")], "judge shards with the policy")
    _refused(policy, [], "no measurement files")
    stretched = (RuleRun("chat", "websocket", rule_digest(policy.rules[0]), 90),)
    _refused(
        policy,
        [replace(r, rules=stretched) for r in (a, b, shard(policy, 2))],
        "planned 9 attempts in all, not 90",
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": 2}, "this deploy-guard reads version 1"),
        ({"schema": "other"}, "schema"),
        ({"shard": {"index": 3, "count": 3}}, "not K/N"),
        ({"measurements": []}, "one per rule"),
    ],
)
def test_a_file_of_another_shape_is_refused(
    policy: Policy, tmp_path: Path, change: dict[str, object], words: str
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(shard(policy, 0).to_dict() | change))
    with pytest.raises(ConfigError, match=words):
        read(path)
    with pytest.raises(ValueError, match=words):
        parse(json.loads(path.read_text()))


def test_a_damaged_measurement_names_its_rule(policy: Policy) -> None:
    data = shard(policy, 0).to_dict()
    data["measurements"][0]["succeeded"] = 99
    with pytest.raises(ValueError, match="rule chat: more successes or failures than attempts"):
        parse(data)


def test_the_destination_fills_shard_and_execution() -> None:
    env = {"CLOUD_RUN_EXECUTION": "probe-abc12"}
    path = destination("/results/{execution}/shard-{shard}-of-{shards}.json", Shard(2, 5), env)
    assert path == Path("/results/probe-abc12/shard-2-of-5.json")
    with pytest.raises(ConfigError, match="CLOUD_RUN_EXECUTION, which Cloud Run sets"):
        destination("/r/{execution}.json", Shard(0, 2), {})
    with pytest.raises(ConfigError, match="mount the bucket as a Cloud Storage volume"):
        destination("gs://bucket/shard.json", Shard(0, 2), {})


def test_a_samples_secret_never_reaches_the_file(policy: Policy) -> None:
    from deploy_guard.log import register_secret

    register_secret("s3cr3t-token-value")
    record = shard(policy, 0)
    leaky = Attempt(ok=False, cause="error", detail="echoed s3cr3t-token-value", after=1.0)
    m: ProbeMeasurement = replace(record.measurements["chat"], samples=(leaky,))
    text = json.dumps(replace(record, measurements={"chat": m}).to_dict())
    assert "s3cr3t-token-value" not in text
