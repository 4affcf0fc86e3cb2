"""Plots of stored lava results. OWNER: plots helper."""
