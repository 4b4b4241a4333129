"""Config loading: the minimal registry is valid; mistakes name file, key, expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config.generate import demo_registry, write_demo_registry
from config.loader import ConfigError, load_config

MINIMAL = """\
timezone: Asia/Shanghai
towns:
  - {id: gufu, name: 郭扶镇}
residents:
  - {id: r-0001, town: gufu, device: dev-0001, conditions: [copd]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_minimal_registry_is_a_complete_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.residents[0].conditions == ["copd"]
    assert config.broker.url == "mqtt://127.0.0.1:1883"
    assert config.storage.sink == "sqlite"
    assert config.pipeline.tick_s == 1.0


@pytest.mark.parametrize(
    ("mutate", "key", "expected"),
    [
        (lambda d: d["residents"][0].update(town="nowhere"), "residents[0].town", "towns' ids"),
        (lambda d: d["residents"][0].update(device="dev 1"), "residents.0.device", "pattern"),
        (lambda d: d.update(timezone="Mars/Olympus"), "timezone", "IANA"),
        (lambda d: d.update(brokr={"url": "x"}), "brokr", "unknown key"),
        (lambda d: d.update(broker={"url": "http://x"}), "broker.url", "pattern"),
        (lambda d: d["towns"].append({"id": "gufu"}), "towns", "unique"),
        (lambda d: d.pop("residents"), "residents", "required"),
        (lambda d: d.update(pipeline={"tick_s": -1}), "pipeline.tick_s", "greater than 0"),
        (lambda d: d.update(routines={"rules": {"daily_check": {"time": "09:00",
                                                                "due_time": "08:00"}}}),
         "routines", "rules.daily_check: due_time 08:00 must be after time 09:00"),
        # a town's field over the deployment's rule: checked as it will be in force
        (lambda d: d.update(routines={"rules": {"weekly_call": {"due_days": 0}},
                                      "towns": {"gufu": {"weekly_call": {"time": "19:00"}}}}),
         "routines", "towns.gufu.weekly_call: due_time 18:00 must be after time 19:00"),
        # references that exist but cannot work: nobody would be on duty at that tier
        (lambda d: (d.update(staff=[{"id": "boss", "tier": 4}]),
                    d["residents"][0].update(staff="boss")),
         "residents[0].staff", "a tier-1 (服务人员) staff id, the resident's carer, got "
         "'boss' of tier 4"),
        (lambda d: (d["towns"].append({"id": "lishi"}),
                    d.update(institutions=[{"id": "inst-b", "towns": ["lishi"]}]),
                    d["residents"][0].update(institution="inst-b")),
         "residents[0].institution", "one serving the resident's town 'gufu', got 'inst-b'"),
        (lambda d: d.update(staff=[{"id": "s1", "tier": 1, "town": "gufu"}],
                            rosters=[{"tier": 2, "shifts": [{"staff": ["s1"]}]}]),
         "rosters[0].shifts[0].staff", "staff of the roster's tier 2, got 's1' of tier 1"),
        (lambda d: d.update(staff=[{"id": "d1", "tier": 2}],
                            rosters=[{"tier": 2, "shifts": [{"staff": ["d1"], "start": "08:00",
                                                             "end": "08:00"}]}]),
         "rosters[0].shifts[0]", "start 08:00 and end 08:00 cover none"),
        # due after the period closes: missed before it is ever due (a week is 7 days)
        (lambda d: d.update(routines={"rules": {"weekly_call": {"due_days": 7}}}),
         "routines", "rules.weekly_call: due 7 days after issue at 18:00 falls after the "
         "period closes (7 days after issue at 09:00"),  # (its own 09:00, not the generic)
        (lambda d: d.update(routines={"rules": {"monthly_visit": {"due_days": 28}}}),
         "routines", "rules.monthly_visit: due 28 days after issue at 18:00 falls after"),
        # a town's acknowledgement times are checked like the deployment's (0 crashed every
        # tick at tier 4, a negative one looped for ever, a misspelt severity was ignored)
        (lambda d: d["towns"][0].update(ack_timeout_s={"critical": 0}),
         "towns[0].ack_timeout_s", "critical: a positive number of seconds, got 0"),
        (lambda d: d["towns"][0].update(ack_timeout_s={"critical": -10}),
         "towns[0].ack_timeout_s", "critical: a positive number of seconds, got -10"),
        (lambda d: d["towns"][0].update(ack_timeout_s={"Critical": 60}),
         "towns[0].ack_timeout_s", "keys must be severities"),
        (lambda d: d.update(ack_timeout_s={"high": float("nan")}),
         "ack_timeout_s", "high: a positive number of seconds, got nan"),
        # webhook URLs: a typo failed only when sending, every tick
        (lambda d: d.update(alerts={"webhooks": ["hooks.example.org/carewatch"]}),
         "alerts.webhooks[0]", "expected an http:// or https:// URL with a host (no spaces or "
         "control characters), got 'hooks.example.org/carewatch'"),
        (lambda d: d.update(alerts={"webhooks": ["http://hooks.example.org:80a/x"]}),
         "alerts.webhooks[0]", "expected an http:// or https:// URL with a valid host and port"),
        (lambda d: d.update(staff=[{"id": "carer-1", "tier": 1, "webhook": "ftp://h/x"}]),
         "staff[0].webhook", "expected an http:// or https:// URL with a host"),
        (lambda d: d.update(staff=[{"id": "carer-1", "tier": 1, "webhook": "https:///x"}]),
         "staff[0].webhook", "expected an http:// or https:// URL with a host"),
    ],
)
def test_mistakes_name_file_key_and_expectation(
    tmp_path: Path,
    mutate,
    key: str,  # type: ignore[no-untyped-def]
    expected: str,
) -> None:
    data = yaml.safe_load(MINIMAL)
    mutate(data)
    path = write(tmp_path, yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert key.replace(".0.", "[0].") in text or key in text, text
    assert expected in text, text


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second `residents:` list silently
    dropped the residents of the first."""
    twice = MINIMAL + "residents:\n  - {id: r-0100, town: gufu, device: dev-0100}\n"
    with pytest.raises(ConfigError,
                       match=r"(?s)line 6, column 1: .*found the key 'residents' twice"):
        load_config(write(tmp_path, twice))


def test_a_routine_given_in_part_keeps_its_own_defaults(tmp_path: Path) -> None:
    data = yaml.safe_load(MINIMAL)
    data["routines"] = {"rules": {"weekly_call": {"weekday": 3}}}
    rule = load_config(write(tmp_path, yaml.safe_dump(data))).routines.rules.weekly_call
    assert (rule.weekday, rule.time, rule.due_days) == (3, "09:00", 4)  # not 08:00, due 0


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(write(tmp_path, "towns: [\n  - a: b\n residents"))


def test_unknown_condition_kept_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write(tmp_path, MINIMAL.replace("[copd]", "[copd, gout]")))
    assert config.residents[0].conditions == ["copd", "gout"]
    assert "gout" in caplog.text


def test_cli_exits_nonzero_on_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("town: gufu", "town: elsewhere"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "carewatch.cli",
            "replay",
            "x.jsonl",
            "--config",
            str(path),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "residents[0].town" in proc.stderr


def test_demo_registry_shaped_like_the_district(tmp_path: Path) -> None:
    data = demo_registry(500, seed=3)
    assert len(data["towns"]) == 21
    assert len(data["residents"]) == 500
    towns_used = {r["town"] for r in data["residents"]}
    assert towns_used == {t["id"] for t in data["towns"]}
    config = load_config(write_demo_registry(tmp_path / "d.yaml", 500, seed=3))
    assert {s.tier for s in config.staff} == {1, 2, 3, 4}
    assert all(r.staff for r in config.residents)
    assert demo_registry(50, seed=1) == demo_registry(50, seed=1)


def test_a_config_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    """It used to end in a UnicodeDecodeError traceback (exit 1)."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.replace("郭扶镇", "Guf\xfa").encode("latin-1", "replace"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == ["(file): expected UTF-8 text, invalid start byte at byte "
                                  f"{path.read_bytes().index(0xFA)}"]
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("extra", "flags", "expected"), [
    ("broker: {url: 'mqtt://127.0.0.1:1', username: u, password_file: /nonexistent/pw}\n", [],
     "{path}: broker.password_file: expected a readable file, '/nonexistent/pw': "
     "No such file or directory"),
    ("", ["--username", "u", "--password-file", "/nonexistent/pw"],
     "command line: --password-file: expected a readable file, '/nonexistent/pw': "
     "No such file or directory"),
    ("", ["--broker", "http://x"], "command line: --broker: expected String should match"),
])
def test_broker_settings_mistakes_name_the_option_or_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, flags: list[str],
    expected: str
) -> None:
    """A missing password file (config or --password-file) was a FileNotFoundError
    traceback from `run` and `simulate`, a bad --broker a raw pydantic traceback."""
    from carewatch.cli import main

    path = write(tmp_path, MINIMAL + extra)
    for command in (["run", "--http", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")],
                    ["simulate", "--hours", "0.1"]):
        assert main([command[0], "--config", str(path), *command[1:], *flags]) == 2
        assert expected.format(path=path) in capsys.readouterr().err


def test_webhook_urls_accepted(tmp_path: Path) -> None:
    data = yaml.safe_load(MINIMAL)
    data["alerts"] = {"webhooks": ["https://integration.example/hook", "http://[::1]:8080/h",
                                   "http://127.0.0.1:9/x?token=a%20b"]}
    data["staff"] = [{"id": "carer-1", "tier": 1, "webhook": "http://10.0.0.7/pager"},
                     {"id": "carer-2", "tier": 2}]
    config = load_config(write(tmp_path, yaml.safe_dump(data)))
    assert config.alerts.webhooks == data["alerts"]["webhooks"]
    assert [s.webhook for s in config.staff] == ["http://10.0.0.7/pager", None]
