"""CareWatch: the application layer (clock, pipeline wiring, command line)."""

__version__ = "0.1.0"
