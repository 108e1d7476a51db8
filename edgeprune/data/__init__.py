"""Data: specs resolved to tasks (train and validation batches, a loss, a metric)."""

from edgeprune.data.sources import DATA_HELP, resolve_data
from edgeprune.data.task import Task, as_task, tensor_task, top1

__all__ = ["DATA_HELP", "Task", "as_task", "resolve_data", "tensor_task", "top1"]
