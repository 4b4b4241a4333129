"""A change of partition (`--workers 2` -> `--workers 3`): what was published while the
pipeline was down waits in the sessions of the old partition; those are handed over to
the towns' new owners (`carewatch.sessions`, `ingest.handoff`) and ended, so nothing is lost
and no valid message is refused as `wrong_town`. Also: more workers than towns is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from carewatch.sessions import LEDGER, Session, session_id, take_over
from carewatch.workers import partition_towns, probe_samples, probe_subscribed, supervisor_argv
from config.generate import demo_registry, write_demo_registry
from config.loader import load_config, parse_config
from ingest.broker import MosquittoProcess, free_port_block
from ingest.decode import original_topic, split_topic
from ingest.handoff import handoff_topic
from tests.ingest_harness import Client, wait_for
from tests.process_harness import start_supervisor, stop_process


def test_session_ids_topics_and_the_ledger(tmp_path: Path) -> None:
    assert session_id("cw", None) == "cw"
    assert session_id("cw", ["b", "a"]) == session_id("cw", ["a", "b"]) != session_id("cw", ["a"])
    topic = "carewatch/v1/gufu/dev-1/vitals"
    wrapped = handoff_topic(topic)
    assert wrapped == "carewatch/system/pipeline/handoff/gufu/dev-1/vitals"
    assert split_topic(wrapped) == split_topic(topic) == ("gufu", "dev-1", "vitals")
    assert original_topic(wrapped) == original_topic(topic) == topic
    command = "carewatch/v1/gufu/cmd/alerts"
    assert original_topic(handoff_topic(command)) == command
    assert split_topic("carewatch/system/pipeline/handoff/gufu/dev-1") is None
    one, two, three = (Session(f"cw-{k}", [f"t{k}"]) for k in range(3))
    assert take_over(tmp_path, [one, two]) == []  # a first start leaves nothing behind
    assert take_over(tmp_path, [one, two]) == []  # nor does a restart of the same partition
    assert take_over(tmp_path, [one, three]) == [two]
    assert take_over(tmp_path, [three]) == [two, one]  # not drained yet: still stale
    assert (tmp_path / LEDGER).exists()


def _session_present(port: int, client_id: str) -> bool:
    """Whether the broker still holds a session for `client_id` (a connection that keeps
    it, as the pipeline's do, reads the CONNACK flag)."""
    flag: list[bool] = []
    done = threading.Event()

    def on_connect(_c: object, _u: object, flags: mqtt.ConnectFlags, _r: object,
                   _p: object) -> None:
        flag.append(flags.session_present)
        done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # and leave none behind ourselves
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return flag[0]


def test_what_waits_in_the_old_partitions_sessions_reaches_the_new_owners(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    reg = write_demo_registry(tmp_path / "reg.yaml", 12, seed=1, towns=3)
    config = load_config(reg)
    two, three = partition_towns(config, 2), partition_towns(config, 3)
    old_ids = {session_id("carewatch-pipeline", p) for p in two}
    left = old_ids - {session_id("carewatch-pipeline", p) for p in three}
    assert left, "the partition must change for this test"
    data = tmp_path / "data"
    http2 = free_port_block(3)
    proc, _ = start_supervisor(supervisor_argv(reg, 2, mosquitto.url, http2, data), 2)
    wait_for(lambda: all(probe_subscribed(http2 + 1 + k) for k in range(2)), timeout_s=90,
             what="the two workers subscribed")
    assert stop_process(proc) == 0
    # the pipeline is down (a redeploy): one resident of every town falls meanwhile
    pub = Client(mosquitto.port, "dev-fleet")
    watcher = Client(mosquitto.port, "ops", subscribe=("carewatch/v1/+/+/rejected",))
    proc = None
    try:
        fallen = {r.town: r for r in config.residents}
        now = time.time()
        for r in fallen.values():
            pub.publish(f"carewatch/v1/{r.town}/{r.device}/vitals",
                        {"ts": now - 2, "seq": 1, "fall": True, "worn": True}
                        ).wait_for_publish(5)
        http3 = free_port_block(4)
        proc, _ = start_supervisor(supervisor_argv(reg, 3, mosquitto.url, http3, data), 3)
        expected = [sum(1 for t in part if t in fallen) for part in three]
        wait_for(lambda: [probe_samples(http3 + 1 + k) for k in range(3)] == expected,
                 timeout_s=90, what=f"every fall stored by its town's owner {expected}")
        wait_for(lambda: b'"stale": []' in (data / LEDGER).read_bytes(), timeout_s=60,
                 what="the left-behind sessions drained and forgotten")
        assert watcher.received() == []  # no valid message refused
        for client_id in sorted(left):
            assert not _session_present(mosquitto.port, client_id), client_id
    finally:
        pub.close()
        watcher.close()
        if proc is not None:
            assert stop_process(proc) == 0


def test_more_workers_than_towns_is_refused(tmp_path: Path) -> None:
    reg = write_demo_registry(tmp_path / "reg.yaml", 6, seed=1, towns=2)
    run = subprocess.run([sys.executable, "-m", "carewatch.cli", "run", "--config", str(reg),
                          "--workers", "3", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "3 workers for 2 towns: one would own no town (use at most 2)" in run.stderr


def test_a_worker_restarted_after_a_registry_edit_keeps_its_supervisors_share(
        mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    """A worker restarted after the registry file was edited (residents enrolled) worked
    out its share again from the file: the split could differ from its supervisor's and
    leave a town unowned. It takes the towns its supervisor gave it."""
    data = demo_registry(9, seed=1, towns=3)
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    before = partition_towns(parse_config(data), 2)
    http = free_port_block(3)
    proc, pids = start_supervisor(supervisor_argv(reg, 2, mosquitto.url, http,
                                                  tmp_path / "data"), 2)
    pub = Client(mosquitto.port, "dev-fleet")
    try:
        wait_for(lambda: all(probe_subscribed(http + 1 + k) for k in range(2)), timeout_s=90,
                 what="both workers subscribed")
        # enrol residents in the smallest town of worker 1: the file now splits otherwise
        grow = before[1][0]
        template = next(r for r in data["residents"] if r["town"] == grow)
        data["residents"] += [{**template, "id": f"r-new-{i}", "device": f"dev-new-{i}"}
                              for i in range(8)]
        reg.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
        after = partition_towns(parse_config(data), 2)
        moved = [t for t in before[0] if t not in after[0]]
        assert moved, f"the split must change for this test: {before} -> {after}"
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: probe_samples(http + 1) < 0, what="worker 0 down")
        wait_for(lambda: probe_subscribed(http + 1), timeout_s=90, what="worker 0 back")
        r = next(r for r in data["residents"] if r["town"] == moved[0])
        pub.publish(f"carewatch/v1/{r['town']}/{r['device']}/vitals",
                    {"ts": time.time() - 1, "seq": 1, "hr": 70}).wait_for_publish(5)
        wait_for(lambda: probe_samples(http + 1) == 1, timeout_s=30,
                 what=f"worker 0 still owning {moved[0]}")
    finally:
        pub.close()
        assert stop_process(proc) == 0
