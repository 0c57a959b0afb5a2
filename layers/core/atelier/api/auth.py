"""Authentication for API routes, as Powertools ``Depends`` dependencies.

- ``Depends(authenticated_account)``: a user's bearer token only (signing out, buying, linking...). The
  token must be a valid access token (``atelier.identity.tokens``) of a session that is still open (one
  read of the session item: a signed-out session or a deleted account is refused at once).
- ``Depends(account_for('tasks:write'))`` (one per scope, below): a bearer token, or an ``X-API-Key`` that
  carries the scope (``atelier.identity.api_keys``). A key on a bearer-only route is refused (401).
"""

from __future__ import annotations

from collections.abc import Callable

from aws_lambda_powertools.event_handler.request import Request

from atelier.identity.tokens import Claims, InvalidToken
from atelier.wiring import api_keys, sessions


def _header(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name), '')


def bearer_token(request: Request) -> str:
    header = _header(request, 'authorization')
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


def account_for(scope: str) -> Callable[[Request], str]:
    """A dependency taking a bearer token, or an API key that carries ``scope``."""

    def dependency(request: Request) -> str:
        key = _header(request, 'x-api-key').strip()
        if key and not _header(request, 'authorization'):
            return api_keys().authorize(key, scope)
        return authenticated_account(request)

    dependency.__name__ = f'account_for_{scope.replace(":", "_")}'
    return dependency


# One dependency per scope (Powertools wants the same function object for the same dependency).
account_read = account_for('account:read')
models_read = account_for('models:read')
tasks_read = account_for('tasks:read')
tasks_write = account_for('tasks:write')
uploads_write = account_for('uploads:write')
ledger_read = account_for('ledger:read')
