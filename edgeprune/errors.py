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


class MissingDependencyError(EdgepruneError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing(module: str, extra: str) -> MissingDependencyError:
    """Build the error for a missing optional dependency.

    Args:
        module: the import name that failed.
        extra: the edgeprune extra that provides it.
    """
    return MissingDependencyError(f"{module} is not installed: install it with `pip install 'edgeprune[{extra}]'`")
