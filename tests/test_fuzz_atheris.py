"""Coverage-guided fuzzing of the payload decoder with atheris (libFuzzer), when installed.

`python tests/test_fuzz_atheris.py -runs=N` fuzzes directly; the test below runs it for a
bounded number of inputs in a subprocess (libFuzzer owns the process). atheris is not a
project dependency: `pip install atheris` (wheels for CPython 3.11 on Linux x86-64).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fuzz_main() -> None:
    import atheris

    # instrument the decoder only: instrumenting pydantic and friends crashes and is slow
    with atheris.instrument_imports(include=["ingest.decode", "ingest.samples"]):
        from ingest.decode import REJECTION_REASONS, VitalsDecoder
    from ingest.devices import DeviceTable
    from tests.ingest_harness import small_config

    config = small_config(residents=4, towns=2)
    decoder = VitalsDecoder(DeviceTable.from_config(config))
    r = config.residents[0]
    topics = [f"carewatch/v1/{r.town}/{r.device}/vitals", "carewatch/v1/+/#/vitals"]
    now = 1764316800.0

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        topic = topics[fdp.ConsumeIntInRange(0, 1)]
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        out = decoder.decode_vitals([(topic, payload, now)], now)
        assert out.messages_accepted + len(out.rejections) == 1
        for rej in out.rejections:
            assert rej.reason in REJECTION_REASONS and rej.detail
        rejections: list[Any] = []
        decoder.decode_status(topic.replace("vitals", "status"), payload, now, rejections)

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def test_atheris_decoder_bounded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([b'{"ts": 1764316790, "hr": 70, "fall": true}',
                              b'{"samples": [{"ts": 1764316790, "spo2": 88}]}', b"[[[", b"{}"]):
        (corpus / f"seed{i}").write_bytes(b"\x00" + seed)
    # libFuzzer's memory limit is on the peak RSS, and Linux hands a child the larger of its
    # own and its parent's at exec: a suite grown to a gigabyte by earlier tests tripped it
    # before the first input. The fuzzer gets 1 GiB on top of what it inherits, and no
    # single allocation over 1 GiB; what it finds is written under tmp_path, not the repo.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    proc = subprocess.run(
        [sys.executable, __file__, "-runs=20000", "-max_len=70000",
         f"-rss_limit_mb={inherited_mb + 1024}", "-malloc_limit_mb=1024",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Done 20000 runs" in proc.stderr


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    fuzz_main()
