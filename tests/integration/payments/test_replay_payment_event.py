"""Ops replay (ReplayPaymentEventFunction): stored events are applied again, never granting twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.payments.models import ReplayRequest
from tests.integration.payments.conftest import World
from tests.support_payments import checkout_session, rc_purchase, stripe_event

EVENTS = Path(__file__).resolve().parents[2] / 'events' / 'payments'


def fail_ledger_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.ledger import Ledger

    def down(self, *args, **kwargs):
        raise ConnectionError('ledger unavailable')

    monkeypatch.setattr(Ledger, 'grant', down)


def test_a_failed_event_is_replayed_by_id_and_granted_once(world: World, monkeypatch: pytest.MonkeyPatch):
    # Given an event that failed on every delivery (the provider gave up)
    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        assert world.stripe(event).status == 503
    assert world.stored('stripe', event['id']).status == 'failed'
    # When ops replay it, twice
    first = world.replay({'provider': 'stripe', 'event_id': event['id']})
    second = world.replay({'provider': 'stripe', 'event_id': event['id']})
    # Then it is processed and granted once
    assert first['replayed'][0]['status'] == 'processed'
    assert second['replayed'][0]['status'] == 'processed'
    assert world.balance(account) == 100
    assert world.stored('stripe', event['id']).status == 'processed'


def test_replaying_every_failed_event(world: World, monkeypatch: pytest.MonkeyPatch):
    account = world.account()
    stripe = stripe_event('checkout.session.completed', checkout_session(account))
    revenuecat = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_replay')
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        assert world.stripe(stripe).status == 503
        assert world.rc(revenuecat).status == 503
    result = world.replay({'status': 'failed'})
    assert sorted(r['status'] for r in result['replayed']) == ['processed', 'processed']
    assert world.balance(account) == 200
    assert world.replay({'status': 'failed'}) == {'replayed': []}


def test_a_parked_event_is_applied_once_its_account_exists(world: World):
    # Given a purchase for an account that did not exist yet (parked, 200 to Stripe)
    from atelier.wiring import ledger

    account = 'acc_created_later_0001'
    event = stripe_event('checkout.session.completed', checkout_session(account))
    assert world.stripe(event).body['status'] == 'parked'
    # When the account appears and ops replay the parked events
    ledger().open_account(account)
    result = world.replay({'status': 'parked', 'limit': 10})
    # Then the purchase is granted
    assert [r['status'] for r in result['replayed']] == ['processed']
    assert world.balance(account) == 100


def test_a_replay_failure_is_reported_not_hidden(world: World, monkeypatch: pytest.MonkeyPatch):
    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        world.stripe(event)
        result = world.replay({'provider': 'stripe', 'event_id': event['id']})
    assert result['replayed'][0]['status'] == 'failed'
    assert world.stored('stripe', event['id']).status == 'failed'
    assert world.stored('stripe', event['id']).attempts == 2


def test_an_unknown_event_is_an_error(world: World):
    from atelier.errors import NotFound

    with pytest.raises(NotFound):
        world.replay({'provider': 'stripe', 'event_id': 'evt_never_seen'})


@pytest.mark.parametrize('path', sorted(EVENTS.glob('replay_*.json')), ids=lambda p: p.name)
def test_the_documented_test_events_are_valid_requests(path: Path):
    ReplayRequest.model_validate(json.loads(path.read_text()))


def test_an_invalid_request_is_refused(world: World):
    from aws_lambda_powertools.utilities.parser import ValidationError

    with pytest.raises(ValidationError):
        world.replay({'event_id': 'evt_1'})
