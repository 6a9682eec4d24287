"""The session store on its own: ids kept only as digests, expiry, and a bounded table."""

from __future__ import annotations

from roost.admin.sessions import COOKIE, Sessions, cookie_value, set_cookie
from roost.clock import ManualClock


def test_the_store_holds_no_cookie_value_and_forgets_an_ended_session() -> None:
    sessions = Sessions(ManualClock(), idle_ms=1_000, max_ms=10_000)
    session_id, session = sessions.create("ada")
    assert session_id not in repr(vars(sessions)), "only its SHA-256 is kept"
    assert sessions.find(session_id) is session
    assert sessions.find(session_id + "x") is None
    sessions.end(session_id)
    assert sessions.find(session_id) is None and len(sessions) == 0


def test_when_full_the_expired_go_first_then_the_oldest() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, idle_ms=1_000, max_ms=10_000, max_sessions=3)
    first, _ = sessions.create("a")
    clock.advance(600)
    second, _ = sessions.create("b")
    third, _ = sessions.create("c")
    clock.advance(500)  # the first is idle 1.1 s: expired, not yet noticed
    fourth, _ = sessions.create("d")
    assert [sessions.find(s) is not None for s in (first, second, third, fourth)] == [
        False, True, True, True
    ]  # fmt: skip
    fifth, _ = sessions.create("e")  # none expired: the oldest, the second, goes
    assert [sessions.find(s) is not None for s in (second, third, fourth, fifth)] == [
        False, True, True, True
    ]  # fmt: skip
    assert len(sessions) == 3


def test_the_cookie_is_read_by_its_name_for_the_scheme() -> None:
    header = f"other=1; {COOKIE}=abc; __Host-{COOKIE}=xyz"
    assert cookie_value(header, secure=False) == "abc"
    assert cookie_value(header, secure=True) == "xyz"
    assert cookie_value("", secure=False) is None
    assert cookie_value(f"{COOKIE}=", secure=False) is None
    assert set_cookie("abc", secure=False, max_age_s=60) == (
        f"{COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
    )


def test_one_user_logging_in_again_and_again_cannot_push_others_out() -> None:
    clock = ManualClock()
    sessions = Sessions(clock, idle_ms=60_000, max_ms=600_000, max_sessions=4)
    admin_id, admin = sessions.create("admin")
    made = [sessions.create("mallory") for _ in range(10)]
    assert sessions.find(admin_id) is admin, "the other user's session is still there"
    alive = [sid for sid, _ in made if sessions.find(sid) is not None]
    assert len(alive) == 2, "mallory keeps her share (half the table), her oldest ended"
    assert all(session.ended for _, session in made[:-2])
