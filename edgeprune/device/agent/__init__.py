"""The on-device measurement service (``edgeprune agent serve``).

Modules: :mod:`~edgeprune.device.agent.config` (settings and token), :mod:`~.store` (SQLite),
:mod:`~.jobs` (the one-at-a-time queue), :mod:`~.worker` (the measurement subprocess) and
:mod:`~.app` (the HTTP API). Importing this package loads none of them, so ``import
edgeprune.device.agent.worker`` in the subprocess does not drag in the web stack.
"""
