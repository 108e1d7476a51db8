"""Readers for the hardware sensors a measurement needs: power rails, clocks, temperatures.

One module per source, each usable on its own and none importing torch:

- :mod:`.tegrastats`: a pure parser for ``tegrastats`` lines (every L4T format seen in the wild)
  and a power source that follows its output stream.
- :mod:`.jtop`: the jetson-stats client (``j.power``), imported only when a connection is made.
- :mod:`.nvml`: discrete NVIDIA GPUs through NVML, imported only when opened.
- :mod:`.rapl`: x86 package energy counters under ``/sys/class/powercap``.
- :mod:`.jetson`: ``nvpmodel -q`` and ``jetson_clocks --show`` parsers, the same facts read from
  sysfs, thermal zones and throttling hints.

Hardware is always reached through a root path or a text stream, so every reader is tested
against fake sysfs trees and real recorded output. Their errors (``SensorError``,
``SensorUnavailable``) live in :mod:`edgeprune.errors` with every other error.
"""
