"""The one exception family of edgeprune.

Every error a user can cause derives from :class:`EdgepruneError`, and its message says what to do
next. The CLI turns these into exit code 2 and one red line, never a traceback.
"""


class EdgepruneError(Exception):
    """Base of all errors that edgeprune raises on purpose."""


class UsageError(EdgepruneError, ValueError):
    """Bad user input: an unknown model name, a sparsity outside (0, 1), a missing file."""


class GraphError(EdgepruneError):
    """The dependency graph cannot map an operation of the model."""


class PruneError(EdgepruneError):
    """A pruning request cannot be carried out on this model."""


class ExportError(EdgepruneError):
    """ONNX export failed, or the exported model does not match PyTorch."""


class BundleError(EdgepruneError):
    """A bundle is missing, malformed or fails its checksums."""


class RunnerError(EdgepruneError):
    """An inference runner was misused or its backend failed."""


class EngineBuildError(RunnerError):
    """TensorRT could not parse the ONNX or build an engine; the message carries the log's errors."""


class AgentError(EdgepruneError):
    """The agent could not be reached, refused a request, or a job on it failed.

    Attributes:
        status: the HTTP status the agent answered with, or None if it was not reached at all.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreError(EdgepruneError):
    """The agent's database cannot be opened or written."""


class SensorError(EdgepruneError):
    """A sensor that was working failed, or returned something that cannot be trusted."""


class SensorUnavailable(SensorError):
    """A sensor does not exist here or cannot be read; the message says why and what to do.

    Measurement code turns this into ``null`` with the message as the reason, never a guess.
    """


class MissingDependencyError(EdgepruneError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing(module: str, extra: str) -> MissingDependencyError:
    """Build the error for a missing optional dependency.

    Args:
        module: the import name that failed.
        extra: the edgeprune extra that provides it.
    """
    return MissingDependencyError(f"{module} is not installed: install it with `pip install 'edgeprune[{extra}]'`")
