"""Tidy pandas DataFrames (and arrays) from stored lava results. OWNER: biology helper."""
