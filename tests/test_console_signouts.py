"""Sign-outs are kept in a file beside the users file: a restarted process and every other
process of the same console (workers, gateways) refuse a signed-out session cookie."""

from __future__ import annotations

from pathlib import Path

from carewatch.clock import SimClock
from console.auth import Auth
from console.signouts import SignOuts
from console.testing import console_config, set_passwords, staff_of_each_tier


def _auth(path: Path, clock: SimClock) -> Auth:
    config = console_config(6, towns=2)
    store = set_passwords(path / "users.json", config, [staff_of_each_tier(config)[4]])
    return Auth(store, b"k" * 32, 3600.0, clock)


def test_a_sign_out_reaches_other_processes_and_outlives_a_restart(tmp_path: Path) -> None:
    clock = SimClock(1000.0)
    a, b = _auth(tmp_path, clock), _auth(tmp_path, clock)  # two processes, one console dir
    cookie, session = a.issue("district-centre")
    other, _ = a.issue("district-centre")
    assert a.parse(cookie) is not None and b.parse(cookie) is not None
    a.revoke(session)
    assert a.parse(cookie) is None
    assert b.parse(cookie) is None  # the other process read the file
    assert _auth(tmp_path, clock).parse(cookie) is None  # a restart too
    assert b.parse(other) is not None  # only that session
    clock.advance(3601.0)  # past its expiry the cookie is refused anyway
    assert a.parse(other) is None


def test_concurrent_appends_and_a_torn_line_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "signouts.log"
    writers = [SignOuts(path) for _ in range(3)]
    for i in range(30):
        writers[i % 3].add(f"s{i}", 5000.0)
    with path.open("a") as f:
        f.write("s-torn 50")  # a writer that died mid-line: the line is incomplete
    reader = SignOuts(path)
    assert all(reader.revoked(f"s{i}", 1000.0) for i in range(30))
    assert not reader.revoked("s-unknown", 1000.0)
    assert not reader.revoked("s1", 6000.0)  # expired
