"""Generation tasks: creation with a credit hold, the provider lifecycle, settlement, cancel, sweeper."""

from atelier.tasks.models import (
    AwaitInput,
    Created,
    CreateTaskRequest,
    Estimate,
    EstimateRequest,
    ReleaseInput,
    StepInput,
    StepResult,
    Task,
    TaskPage,
    TaskStatus,
    TaskView,
)
from atelier.tasks.service import TaskService

__all__ = [
    'AwaitInput',
    'CreateTaskRequest',
    'Created',
    'Estimate',
    'EstimateRequest',
    'ReleaseInput',
    'StepInput',
    'StepResult',
    'Task',
    'TaskPage',
    'TaskService',
    'TaskStatus',
    'TaskView',
]
