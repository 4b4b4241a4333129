"""Configuration: pydantic models for the registry and settings, loading, and generators."""

from config.loader import ConfigError, load_config, parse_config
from config.models import Config, Resident, Town

__all__ = ["Config", "ConfigError", "Resident", "Town", "load_config", "parse_config"]
