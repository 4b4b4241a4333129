"""Ingest: MQTT in, decoding, validation, per-device NumPy state, storage sinks."""
