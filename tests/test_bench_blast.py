"""The benchmark sender spreads pre-encoded QoS 1 messages over many topics through a real
Mosquitto, in order per topic, and returns once the broker has acknowledged them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from carewatch.bench.blast import publish_packet, write_packets
from ingest.broker import MosquittoProcess
from tests.ingest_harness import Client, wait_for


def test_packets_reach_their_topics_in_order(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    topics = [f"bench/dev-{i:03d}" for i in range(50)]
    messages = [(topics[i % 50], orjson.dumps({"seq": i})) for i in range(70_000)]
    path = tmp_path / "packets.bin"
    assert write_packets(path, messages) == 70_000  # packet ids wrap past 65,535
    watch = Client(mosquitto.port, "watch", subscribe=("bench/#",))
    try:
        done = subprocess.run([sys.executable, "-m", "carewatch.bench.blast",
                               str(mosquitto.port), str(path), "blaster", "70000"],
                              timeout=120, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        wait_for(lambda: len(watch.received()) == 70_000, 60.0, "every message delivered")
        got = watch.received()
        for topic in (topics[0], topics[49]):
            seqs = [body["seq"] for t, body in got if t == topic]
            assert seqs == sorted(seqs) and len(seqs) == 1_400
    finally:
        watch.close()


def test_publish_packet_encodes_remaining_length_past_127_bytes() -> None:
    pkt = publish_packet("t/x", b"y" * 200, 7)
    assert pkt[0] == 0x32
    # remaining length 2 + 3 + 2 + 200 = 207 -> two bytes, 0xCF 0x01
    assert pkt[1:3] == bytes([207 % 128 | 0x80, 207 // 128])
    assert pkt[3:5] == b"\x00\x03" and pkt[5:8] == b"t/x" and pkt[8:10] == b"\x00\x07"
    assert pkt[10:] == b"y" * 200
