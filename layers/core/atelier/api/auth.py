"""Bearer authentication for API routes, as a Powertools ``Depends`` dependency.

Usage in a route: ``account_id: Annotated[str, Depends(authenticated_account)]``. The token must be a valid
access token (``atelier.identity.tokens``) of a session that is still open (one read of the session item:
a signed-out session or a deleted account is refused at once, not when its token expires).
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.request import Request

from atelier.identity.tokens import Claims, InvalidToken
from atelier.wiring import sessions


def bearer_token(request: Request) -> str:
    header = next((v for k, v in request.headers.items() if k.lower() == 'authorization'), '')
    scheme, _, token = header.partition(' ')
    if scheme.lower() != 'bearer' or not token.strip():
        raise InvalidToken('Send "Authorization: Bearer <token>".', code='missing_token')
    return token.strip()


def authenticated_session(request: Request) -> Claims:
    """The claims of the verified bearer token of ``request`` (its account and session)."""
    return sessions().authenticate(bearer_token(request))


def authenticated_account(request: Request) -> str:
    """The account id of the verified bearer token of ``request``."""
    return authenticated_session(request).account_id
