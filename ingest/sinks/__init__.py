"""History sinks: where accepted samples are kept (SQLite, InfluxDB 2, or nowhere)."""

from ingest.sinks.base import BackgroundSink, NullSink, Sink, build_sink

__all__ = ["BackgroundSink", "NullSink", "Sink", "build_sink"]
