"""The vocabularies as types: job states and error kinds keep the exact strings stored in
SQLite and recordings, and their properties agree with the groupings the engine uses."""

from __future__ import annotations

import json
import sqlite3

from mavera_tui import api_types as api
from mavera_tui import snapshot as S
from mavera_tui.states import ErrorKind, JobState

# The strings already in users' databases and recordings: changing one loses their jobs.
STORED_STATES = {
    "queued",
    "waiting_window",
    "waiting_slot",
    "backoff",
    "waiting_credits",
    "paused",
    "in_flight",
    "succeeded",
    "failed",
    "cancelled",
    "blocked_preflight",
    "outcome_unknown",
}
STORED_KINDS = {
    "rate_limited",
    "concurrency_limited",
    "credits_exhausted",
    "budget_exceeded",
    "unauthorized",
    "server_error",
    "timeout",
    "connection_error",
    "bad_response",
    "client_error",
}


def test_job_states_keep_the_strings_stored_in_databases_and_recordings() -> None:
    assert {s.value for s in JobState} == STORED_STATES
    assert JobState("blocked_preflight") is JobState.BLOCKED
    assert json.dumps({JobState.IN_FLIGHT: [JobState.FAILED]}) == '{"in_flight": ["failed"]}'
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE jobs (state TEXT)")
    con.execute("INSERT INTO jobs VALUES (?)", (JobState.OUTCOME_UNKNOWN,))
    assert con.execute("SELECT state, typeof(state) FROM jobs").fetchone() == (
        "outcome_unknown",
        "text",
    )


def test_a_state_read_back_as_text_finds_its_member_in_sets_and_dicts() -> None:
    assert "queued" in {JobState.QUEUED} and {"paused": 1}[JobState.PAUSED] == 1
    assert {JobState.SUCCEEDED: 2}["succeeded"] == 2


def test_every_state_is_exactly_one_of_waiting_in_flight_or_final() -> None:
    for s in JobState:
        assert [s.waiting, s is JobState.IN_FLIGHT, s.final].count(True) == 1, s
        assert s.active == (not s.final)


def test_the_snapshot_names_are_the_enum_members_in_the_same_groups() -> None:
    assert S.WAITING_STATES == tuple(s for s in JobState if s.waiting)
    assert set(S.ACTIVE_STATES) == {s for s in JobState if s.active}
    assert set(S.FINAL_STATES) == {s for s in JobState if s.final}
    assert S.BLOCKED is JobState.BLOCKED and S.IN_FLIGHT is JobState.IN_FLIGHT


def test_error_kinds_keep_their_strings_and_match_the_client_vocabulary() -> None:
    assert {k.value for k in ErrorKind} == STORED_KINDS
    # api_types still spells the kinds as constants; they must stay the same words.
    assert [
        api.RATE_LIMITED,
        api.CONCURRENCY,
        api.CREDITS,
        api.BUDGET,
        api.AUTH,
        api.SERVER,
        api.TIMEOUT,
        api.CONNECTION,
        api.BAD_RESPONSE,
        api.CLIENT,
    ] == list(ErrorKind)
    assert {k for k in ErrorKind if k.retryable} == set(api.RETRYABLE)


def test_error_kind_properties_say_what_the_scheduler_does() -> None:
    assert {k for k in ErrorKind if k.charge_unknown} == {
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.BAD_RESPONSE,
    }
    assert {k for k in ErrorKind if k.holds_key} == {ErrorKind.RATE_LIMITED}
    assert not ErrorKind.CONCURRENCY.holds_key  # a cap's 429 holds one endpoint only
    assert not ErrorKind.CREDITS.retryable  # a 402 parks, it is not retried blindly
