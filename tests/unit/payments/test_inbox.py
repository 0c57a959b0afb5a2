"""The inbox answers 503 (retry) when an event cannot even be stored, never a bare 500."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from atelier.payments.errors import PaymentsUnavailable
from atelier.payments.inbox import PaymentInbox


class ContendedTable:
    def record_event(self, *args: Any) -> Any:
        error = {'Error': {'Code': 'TransactionCanceledException', 'Message': 'Transaction cancelled'}}
        raise ClientError(error, 'TransactWriteItems')


def test_an_event_that_cannot_be_stored_is_unavailable_so_the_provider_retries():
    inbox = PaymentInbox(ContendedTable(), lambda provider, event: None)  # type: ignore[arg-type]
    with pytest.raises(PaymentsUnavailable):
        inbox.accept('stripe', 'evt_1', 'charge.refunded', b'{}', {}, lambda event: None)  # type: ignore[arg-type,return-value]
