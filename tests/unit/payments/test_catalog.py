"""The commerce catalog: what money buys, and the limits it reuses from the model catalog's plans."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atelier.payments.catalog import CommerceCatalog, load_commerce_catalog, plan_concurrency


def test_the_local_catalog_sells_what_the_architecture_documents():
    catalog = load_commerce_catalog()
    assert {p.id: p.credits for p in catalog.packs} == {'pack_100': 100, 'pack_500': 500}
    assert {p.id: p.period_credits for p in catalog.plans} == {'free': 0, 'pro': 1000}
    assert catalog.store_product('credits_100').credits == 100  # type: ignore[union-attr]
    assert catalog.store_product('pro_monthly').plan == 'pro'  # type: ignore[union-attr]


def test_prices_are_per_mode():
    catalog = load_commerce_catalog()
    assert catalog.pack_by_price('price_atelier_pack_100', 'test').id == 'pack_100'  # type: ignore[union-attr]
    assert catalog.pack_by_price('price_atelier_pack_100', 'live') is None
    assert catalog.plan_by_price('price_live_atelier_pro_monthly', 'live').id == 'pro'  # type: ignore[union-attr]
    assert catalog.plan_by_price(None, 'test') is None


def test_play_store_ids_match_on_the_subscription_part():
    catalog = load_commerce_catalog()
    assert catalog.store_product('pro_monthly:p1m').id == 'pro_monthly'  # type: ignore[union-attr]
    assert catalog.store_product('unknown:p1m') is None
    assert catalog.store_product(None) is None


def test_concurrency_limits_come_from_the_plans_of_the_model_catalog():
    from atelier.catalog.plans import load_plans

    plans = load_plans().plans
    assert plan_concurrency('free') == plans['free'].max_concurrent_tasks == 2
    assert plan_concurrency('pro') == plans['pro'].max_concurrent_tasks == 5
    assert plan_concurrency('nonexistent') is None


def test_every_paid_plan_has_limits_and_every_plan_limit_a_plan():
    from atelier.catalog.plans import load_plans

    assert {p.id for p in load_commerce_catalog().plans} == set(load_plans().plans)


@pytest.mark.parametrize(
    'broken',
    [
        {'revenuecat_products': [{'id': 'x', 'kind': 'pack'}]},
        {'revenuecat_products': [{'id': 'x', 'kind': 'subscription', 'plan': 'gold'}]},
        {'plans': [{'id': 'pro', 'name': 'Pro', 'rank': 1, 'period_credits': 10}]},
        {'packs': [{'id': 'p', 'name': 'P', 'credits': 0, 'amount': 1, 'stripe_prices': {'test': 'a', 'live': 'b'}}]},
    ],
)
def test_an_inconsistent_catalog_is_refused(broken):
    data = load_commerce_catalog().model_dump(mode='json')
    data.update(broken)
    with pytest.raises(ValidationError):
        CommerceCatalog.model_validate(data)


def test_checkout_idempotency_keys_are_stable_short_and_scoped():
    from atelier.payments.service import checkout_idempotency_key

    key = checkout_idempotency_key('acc_1', 'pack:pack_100', None, now=960_000)
    assert key == checkout_idempotency_key('acc_1', 'pack:pack_100', None, now=960_059)
    assert key != checkout_idempotency_key('acc_1', 'pack:pack_100', None, now=960_061)
    assert key != checkout_idempotency_key('acc_2', 'pack:pack_100', None, now=960_000)
    assert key != checkout_idempotency_key('acc_1', 'pack:pack_100', 'client-key', now=960_000)
    assert len(checkout_idempotency_key('a' * 128, 'pack:x' * 10, 'k' * 255)) <= 255


def test_the_fake_stripe_decodes_stripes_form_encoding():
    from urllib.parse import urlencode

    from infra.local.fake_stripe import decode_form

    raw = urlencode(
        [
            ('mode', 'payment'),
            ('line_items[0][price]', 'price_1'),
            ('line_items[0][quantity]', '1'),
            ('line_items[1][price]', 'price_2'),
            ('metadata[pack_id]', 'pack_100'),
            ('payment_intent_data[metadata][account_id]', 'acc_1'),
        ]
    )
    assert decode_form(raw) == {
        'mode': 'payment',
        'line_items': [{'price': 'price_1', 'quantity': '1'}, {'price': 'price_2'}],
        'metadata': {'pack_id': 'pack_100'},
        'payment_intent_data': {'metadata': {'account_id': 'acc_1'}},
    }
