"""Bearer authentication for API routes, as a Powertools ``Depends`` dependency.

Usage in a route: ``account_id: Annotated[str, Depends(authenticated_account)]``.
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.request import Request

from atelier.config import AUTH_TOKEN_SECRET, get_settings
from atelier.identity.tokens import InvalidToken, verify_token


def bearer_token(request: Request) -> str:
    header = next((v for k, v in request.headers.items() if k.lower() == 'authorization'), '')
    scheme, _, token = header.partition(' ')
    if scheme.lower() != 'bearer' or not token.strip():
        raise InvalidToken('Send "Authorization: Bearer <token>".', code='missing_token')
    return token.strip()


def authenticated_account(request: Request) -> str:
    """The account id of the verified bearer token of ``request``."""
    settings = get_settings()
    return verify_token(bearer_token(request), key=settings.secret(AUTH_TOKEN_SECRET)).account_id
