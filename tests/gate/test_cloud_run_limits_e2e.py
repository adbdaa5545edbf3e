"""The check against two limits of real Cloud Run, end to end on the emulator.

- A tag plus the service name is at most 46 characters: the guard's temporary
  tag shortens its random part on a long name, and when no ``dg-`` tag fits
  (a 43- to 49-character name) it says so and writes nothing (exit 2), unless
  the candidate has a tag URL of its own.
- The request timeout cuts WebSocket sessions: a policy whose sessions outlast
  the candidate's timeout is refused before probing (exit 2), instead of rolling
  back a healthy revision whose sessions Cloud Run cut.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.traffic import MAX_TAG_AND_SERVICE, temp_tag, temp_tag_room

from .conftest import Chat


class TimedChat(Chat):
    """The chat service, with a request timeout on every revision it deploys."""

    timeout_s: int = 0

    def template(self, env: dict[str, str] | None = None, command: list[str] | None = None) -> Any:
        template = super().template(env, command)
        if self.timeout_s:
            template.timeout = {"seconds": self.timeout_s}
        return template


def named(chat: Chat, service: str) -> Chat:
    chat.service = service
    return chat


@pytest.mark.parametrize(
    ("length", "room"), [(4, 8), (35, 8), (36, 7), (40, 3), (42, 1), (43, 0), (49, 0)]
)
def test_the_temporary_tag_shrinks_with_the_service_name(length: int, room: int) -> None:
    service = "s" * length
    assert temp_tag_room(service) == room
    tag = temp_tag(service, (), lambda n: "z" * n)
    if room:
        assert tag == "dg-" + "z" * room
        assert len(tag) + length <= MAX_TAG_AND_SERVICE
    else:
        assert tag is None


def test_a_temporary_tag_never_reuses_one_the_service_has() -> None:
    draws = iter(["a", "a", "b"])
    assert temp_tag("s" * 42, {"dg-a"}, lambda n: next(draws)) == "dg-b"


@pytest.mark.fault(
    "traffic", "service name of 40 characters, untagged candidate", "short dg- tag fits, pass"
)
def test_a_check_on_a_service_with_a_long_name_fits_its_temporary_tag(
    chat: Chat, check: Any
) -> None:
    service = "chat-" + "x" * 35  # 40 characters: room for dg- + 3
    named(chat, service).first()
    cand = chat.candidate(tag=None)  # no tag URL of its own
    code, report = check(cand)
    assert code == ExitCode.PASS, report
    tag = report["temporary_tag"]
    assert tag.startswith("dg-")
    assert len(tag) + len(service) == MAX_TAG_AND_SERVICE  # dg- + 3 random characters
    assert "tag_added" in [e["event"] for e in report["timeline"]]
    assert chat.tags() == set()  # removed afterwards


@pytest.mark.fault(
    "traffic", "service name of 45 characters, untagged candidate", "exit 2, nothing written"
)
def test_no_temporary_tag_fits_a_45_character_name_so_the_check_refuses_and_writes_nothing(
    chat: Chat, check: Any, emulator: Any
) -> None:
    service = "chat-" + "x" * 40
    named(chat, service).first()
    cand = chat.candidate(tag=None)
    generation = chat.get().generation
    emulator.faults.reset_counts()
    code, report = check(cand)
    assert code == ExitCode.USAGE, report
    assert "leaves no room for the guard's temporary tag" in report["error"]
    assert "--tag=c" in report["error"]
    assert emulator.faults.count("UpdateService") == 0
    assert (chat.get().generation, chat.tags()) == (generation, set())
    assert report["temporary_tag"] == ""


@pytest.mark.fault(
    "traffic", "service name of 47 characters, untagged candidate", "exit 2, no impossible advice"
)
def test_on_a_name_no_tag_fits_the_refusal_does_not_advise_a_tag(
    chat: Chat, check: Any, emulator: Any
) -> None:
    service = "chat-" + "x" * 42  # 47 characters: Cloud Run allows it, but no tag at all fits
    named(chat, service).first()
    cand = chat.candidate(tag=None)
    code, report = check(cand)
    assert code == ExitCode.USAGE, report
    assert "--tag=c" not in report["error"]  # Cloud Run would refuse that tag too
    assert "no tag of any length fits a name of 46 characters or more" in report["error"]
    assert (
        "service name of at most 42 characters (or 45 with a one-character tag" in (report["error"])
    )
    assert emulator.faults.count("UpdateService") == 1  # the test's own deploy only


def test_a_long_named_service_is_checked_through_the_candidates_own_tag(
    chat: Chat, check: Any, emulator: Any
) -> None:
    service = "chat-" + "x" * 40  # 45 characters: a 1-character tag is all that fits
    named(chat, service).first()
    cand = chat.candidate(tag="c")
    emulator.faults.reset_counts()
    code, report = check(cand)
    assert code == ExitCode.PASS, report
    assert report["temporary_tag"] == ""
    assert emulator.faults.count("UpdateService") == 0  # reached through its own URL
    assert chat.tags() == {"c"}


@pytest.mark.fault(
    "traffic", "WebSocket hold longer than the request timeout", "exit 2 before probing, no tag"
)
def test_sessions_that_outlast_the_request_timeout_are_refused_before_anything_is_written(
    emulator: Any, gcp_clients: Any, fast_polling: Any, check: Any
) -> None:
    chat = TimedChat(emulator, gcp_clients, fast_polling)
    chat.first()
    chat.timeout_s = 2  # `gcloud run deploy --timeout=2`
    cand = chat.candidate(tag=None)  # it would need a temporary tag: none must be added
    generation = chat.get().generation
    emulator.faults.reset_counts()
    code, report = check(cand, policy="chat-hold.yaml")  # expect within 5 s, then hold 4 s
    assert code == ExitCode.USAGE, report
    error = report["error"]
    assert "keeps WebSocket sessions open up to 9s (expect timeouts 5s + hold 4s)" in error
    assert f"revision {cand} has a request timeout of 2s" in error
    assert "`gcloud run services update chat --timeout=15` or shorten the hold" in error
    assert emulator.faults.count("UpdateService") == 0
    assert (chat.get().generation, chat.tags()) == (generation, set())


def test_sessions_within_the_request_timeout_are_probed(
    emulator: Any, gcp_clients: Any, fast_polling: Any, check: Any
) -> None:
    chat = TimedChat(emulator, gcp_clients, fast_polling)
    chat.first()
    chat.timeout_s = 30
    cand = chat.candidate()
    code, report = check(cand, policy="chat-hold.yaml")
    assert code == ExitCode.PASS, report
