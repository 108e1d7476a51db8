"""Measuring: the timing method (``timing``), its settings (``settings``) and a whole benchmark run (``bench``).

Import the module you need (``edgeprune.device.measure.timing`` ...): this package itself loads
nothing, so the agent can read the settings without numpy.
"""
