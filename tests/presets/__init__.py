"""Configs the tests run on, apart from the packaged presets."""

from pathlib import Path

# The loop tests' base config: the old cpu-demo, frozen, so tuning the packaged presets does not change the tests.
LOOP_PRESET = str(Path(__file__).with_name("loop.yaml"))
