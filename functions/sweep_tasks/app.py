from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.observability import logger
from atelier.tasks.wiring import task_service


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    forced = task_service().sweep()
    if forced:
        logger.warning('sweeper forced tasks past their deadline to a final state', extra={'forced': forced})
    return {'forced': forced}
