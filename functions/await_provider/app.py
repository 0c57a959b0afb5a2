from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.observability import logger
from atelier.tasks import AwaitInput
from atelier.tasks.wiring import task_service


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = AwaitInput.model_validate(event)
    logger.append_keys(task_id=step.task_id)
    # The wait ends when someone calls SendTaskSuccess with the token (webhook, cancel, sweeper) or times out.
    task_service().await_provider(step)
    return {'task_id': step.task_id, 'waiting': True}
