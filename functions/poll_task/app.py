from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.observability import logger
from atelier.tasks import StepInput
from atelier.tasks.wiring import task_service


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = StepInput.model_validate(event)
    logger.append_keys(task_id=step.task_id)
    return task_service().poll(step).model_dump(mode='json')
