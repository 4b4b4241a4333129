"""Detectors: pure vectorised computation over all devices at once; no I/O."""
