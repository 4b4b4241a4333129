"""Simulators: device fleets and scenarios, for testing without hardware."""
