"""Local payments in one command, over real HTTP on the offline stack: ``python -m infra.local trigger`` sends
each event the backend handles as the provider would, and the fake Stripe's checkout page has a Pay button.
Every step is checked where a user sees it: the webhook's answer, the balance and the plan (/v1/me)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from infra.local.__main__ import main
from infra.local.template import ROOT
from tests.e2e.conftest import Stack, User, ledger_of, me


class Cli:
    """``python -m infra.local trigger ...`` run in this process against the e2e stack, as its user."""

    def __init__(self, stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
        self.stack = stack
        self.capsys = capsys

    def __call__(self, user: User, provider: str, event: str, *options: str, code: int = 0) -> str:
        argv = ['trigger', provider, event, '--url', self.stack.url, '--token', user.token, *options]
        self.capsys.readouterr()
        assert main(argv) == code, self.capsys.readouterr()
        captured = self.capsys.readouterr()
        return captured.out + captured.err


@pytest.fixture
def trigger(stack: Stack, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(stack, capsys)


def balance(user: User) -> int:
    return int(me(user)['balance']['available'])


def answers(output: str) -> list[str]:
    """The status of each delivery's answer, in order ("processed", "duplicate", ...)."""
    return re.findall(r'HTTP 200 .*?"status": ?"(\w+)"', output)


# ---------------------------------------------------------------- Stripe


def test_a_triggered_stripe_pack_is_granted_once_and_refunds_take_it_back_in_proportion(stack: Stack, trigger: Cli):
    # Given a user with no credits
    user = stack.sign_in()
    # When Stripe's checkout completion for pack_500 is triggered, delivered twice
    out = trigger(user, 'stripe', 'checkout.session.completed', '--pack', 'pack_500', '--times', '2')
    # Then it is granted once, and the output shows what was sent, both answers and the balance
    assert answers(out) == ['processed', 'duplicate']
    assert '"type": "checkout.session.completed"' in out and 'Stripe-Signature' in out
    assert f'balance of {user.account_id}: 500 available, 0 held; plan free' in out
    assert balance(user) == 500
    # When 1000 of its 1999 cents are refunded (the refund refers to that purchase by default)
    assert answers(trigger(user, 'stripe', 'charge.refunded', '--amount', '1000')) == ['processed']
    # Then half its credits are taken back (round half up of 500 x 1000 / 1999)
    assert balance(user) == 250
    # When the rest is refunded, and then a refund of a fully refunded payment is asked for
    trigger(user, 'stripe', 'charge.refunded')
    out = trigger(user, 'stripe', 'charge.refunded', code=2)
    # Then every credit is back with Stripe, and nothing more is sent
    assert balance(user) == 0
    assert '0 of 1999 cents left to refund' in out
    assert sorted(e['amount'] for e in ledger_of(user)) == [-250, -250, 500]


def test_triggered_disputes_take_credits_and_give_them_back_when_won(stack: Stack, trigger: Cli):
    # Given a user who bought pack_100
    user = stack.sign_in()
    trigger(user, 'stripe', 'checkout.session.completed', '--pack', 'pack_100')
    # When a dispute opens on it, its funds are withdrawn, then reinstated (the dispute won)
    trigger(user, 'stripe', 'charge.dispute.created')
    after_dispute = balance(user)
    trigger(user, 'stripe', 'charge.dispute.funds_withdrawn')
    after_withdrawal = balance(user)
    trigger(user, 'stripe', 'charge.dispute.funds_reinstated')
    # Then the credits were taken once and came back
    assert (after_dispute, after_withdrawal, balance(user)) == (0, 0, 100)
    # When the user buys pack_500 and loses a dispute over it
    trigger(user, 'stripe', 'checkout.session.completed', '--pack', 'pack_500')
    trigger(user, 'stripe', 'charge.dispute.created')
    trigger(user, 'stripe', 'charge.dispute.closed', '--status', 'lost')
    # Then that pack stays taken back, the first one stays
    assert balance(user) == 100


def test_a_triggered_delayed_payment_grants_only_when_it_succeeds(stack: Stack, trigger: Cli):
    # Given a user whose checkout of pack_100 completed unpaid (a delayed payment method)
    user = stack.sign_in()
    out = trigger(user, 'stripe', 'checkout.session.completed', '--unpaid')
    assert balance(user) == 0 and 'granted when paid' in out
    # When its payment succeeds (the event refers to that session), twice
    trigger(user, 'stripe', 'checkout.session.async_payment_succeeded', '--times', '2')
    # Then the pack is granted once
    assert balance(user) == 100
    # When another unpaid checkout's payment fails
    trigger(user, 'stripe', 'checkout.session.completed', '--unpaid', '--pack', 'pack_500')
    out = trigger(user, 'stripe', 'checkout.session.async_payment_failed')
    # Then nothing more is granted
    assert 'nothing granted' in out
    assert balance(user) == 100


def test_triggered_stripe_subscription_events_grant_periods_and_move_the_plan(stack: Stack, trigger: Cli):
    # Given a user who started a pro subscription at checkout (the plan, no credits yet)
    user = stack.sign_in()
    trigger(user, 'stripe', 'checkout.session.completed', '--plan', 'pro')
    assert (me(user)['plan'], balance(user)) == ('pro', 0)
    # When its first invoice is paid, and then the next period's
    trigger(user, 'stripe', 'invoice.paid')
    first = balance(user)
    trigger(user, 'stripe', 'invoice.paid')
    # Then each period grants the plan's 1,000 credits
    assert (first, balance(user)) == (1000, 2000)
    # When the subscription goes past due, then is set to cancel at the period's end
    trigger(user, 'stripe', 'customer.subscription.updated', '--status', 'past_due')
    trigger(user, 'stripe', 'customer.subscription.updated', '--cancel-at-period-end')
    # Then the plan stays
    assert me(user)['plan'] == 'pro'
    # When it is deleted, and the last period's payment refunded
    trigger(user, 'stripe', 'customer.subscription.deleted')
    assert (me(user)['plan'], balance(user)) == ('free', 2000)
    trigger(user, 'stripe', 'charge.refunded')
    # Then the plan is off, granted credits stayed, and the refunded period's credits are taken back
    assert (me(user)['plan'], balance(user)) == ('free', 1000)


def test_a_triggered_trial_turns_the_plan_on_without_credits(stack: Stack, trigger: Cli):
    user = stack.sign_in()
    trigger(user, 'stripe', 'customer.subscription.created', '--status', 'trialing')
    assert me(user)['plan'] == 'pro'
    trigger(user, 'stripe', 'invoice.paid', '--amount', '0')
    assert (me(user)['plan'], balance(user)) == ('pro', 0)


# ---------------------------------------------------------------- RevenueCat


def test_triggered_revenuecat_events_grant_refund_reverse_and_expire(stack: Stack, trigger: Cli):
    # Given a user who subscribes to pro in the app, renews, and buys credits_100
    user = stack.sign_in()
    out = trigger(user, 'revenuecat', 'INITIAL_PURCHASE')
    assert '"environment": "SANDBOX"' in out and f'"app_user_id": "{user.account_id}"' in out
    assert (me(user)['plan'], balance(user)) == ('pro', 1000)
    trigger(user, 'revenuecat', 'RENEWAL')
    assert balance(user) == 2000
    out = trigger(user, 'revenuecat', 'NON_RENEWING_PURCHASE', '--times', '3')
    assert answers(out) == ['processed', 'duplicate', 'duplicate']
    assert balance(user) == 2100
    # When the store refunds the pack (the latest purchase), then reverses the refund
    trigger(user, 'revenuecat', 'CANCELLATION', '--refund')
    refunded = balance(user)
    trigger(user, 'revenuecat', 'REFUND_REVERSED')
    assert (refunded, balance(user)) == (2000, 2100)
    # When the user turns auto-renew off and on, billing fails, the product changes: nothing is booked
    for event in ('CANCELLATION', 'UNCANCELLATION', 'BILLING_ISSUE', 'PRODUCT_CHANGE'):
        assert answers(trigger(user, 'revenuecat', event)) == ['processed']
    assert (me(user)['plan'], balance(user)) == ('pro', 2100)
    # When the subscription expires, and the dashboard sends its test event
    trigger(user, 'revenuecat', 'EXPIRATION')
    assert answers(trigger(user, 'revenuecat', 'TEST')) == ['ignored']
    # Then the plan is off and the credits stay
    assert (me(user)['plan'], balance(user)) == ('free', 2100)
    # And a pack bought as an INITIAL_PURCHASE of credits_100 grants it
    trigger(user, 'revenuecat', 'INITIAL_PURCHASE', '--product', 'credits_100')
    assert balance(user) == 2200


def test_a_triggered_revenuecat_transfer_moves_the_plan_not_the_credits(stack: Stack, trigger: Cli):
    alice, bob = stack.sign_in(), stack.sign_in()
    trigger(alice, 'revenuecat', 'INITIAL_PURCHASE')
    trigger(alice, 'revenuecat', 'TRANSFER', '--to', bob.account_id)
    assert (me(alice)['plan'], balance(alice)) == ('free', 1000)
    assert (me(bob)['plan'], balance(bob)) == ('pro', 0)


def test_the_trigger_command_runs_on_its_own_and_finds_the_earlier_purchase(stack: Stack):
    # Given a user, and the trigger run as a person runs it, with the account id only (no token)
    user = stack.sign_in()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'MOTO_'))}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, '-m', 'infra.local', 'trigger', *argv, '--url', stack.url]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    # When a pack is bought in the app, then refunded by the store, in two separate commands
    bought = run('revenuecat', 'INITIAL_PURCHASE', '--account', user.account_id, '--product', 'credits_100')
    assert bought.returncode == 0, bought.stderr
    assert balance(user) == 100
    refunded = run('revenuecat', 'CANCELLATION', '--refund', '--account', user.account_id)
    # Then the refund referred to that purchase and took its credits back
    assert refunded.returncode == 0, refunded.stderr
    assert balance(user) == 0
    assert re.search(r'HTTP 200 .*"processed"', refunded.stdout)
    assert 'not read (pass --token' in refunded.stdout
    # And naming no account is refused before anything is sent
    nobody = run('stripe', 'checkout.session.completed')
    assert nobody.returncode == 2 and '--account' in nobody.stderr


# ---------------------------------------------------------------- the checkout page's Pay button


def pay(url: str) -> httpx.Response:
    """Press Pay on the fake Stripe's checkout page: the page's form, posted."""
    page = httpx.get(url)
    assert page.status_code == 200
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None, page.text
    return httpx.post(httpx.URL(url).join(action.group(1)), data={}, timeout=60)


def checkout(user: User, **item: Any) -> str:
    response = user.post('/v1/checkout', json=item)
    assert response.status_code == 200, response.text
    return str(response.json()['url'])


def test_paying_on_the_checkout_page_grants_the_pack_once(stack: Stack, trigger: Cli):
    # Given a user who opened a checkout for pack_100 through the API
    user = stack.sign_in()
    url = checkout(user, pack_id='pack_100')
    # When they press Pay
    paid = pay(url)
    # Then the page says it is paid, names the webhook sent, and the credits are there
    assert paid.status_code == 200 and 'Payment succeeded' in paid.text
    assert 'checkout.session.completed' in paid.text and 'HTTP 200' in paid.text
    assert balance(user) == 100
    # When they post the form again
    again = httpx.post(url, data={}, timeout=60)
    # Then nothing more is charged or granted
    assert 'paid already' in again.text
    assert balance(user) == 100
    # And a triggered refund refers to that payment
    trigger(user, 'stripe', 'charge.refunded')
    assert balance(user) == 0


def test_paying_a_plan_on_the_checkout_page_starts_it_with_its_credits_and_a_refund_takes_them_back(
    stack: Stack, trigger: Cli
):
    # Given a user who paid a pro plan on the checkout page (its invoice.paid carries no `payments`, as Stripe's)
    user = stack.sign_in()
    paid = pay(checkout(user, plan_id='pro'))
    assert 'invoice.paid' in paid.text
    assert (me(user)['plan'], balance(user)) == ('pro', 1000)
    # When Stripe refunds that subscription payment (the charge names only its PaymentIntent)
    out = trigger(user, 'stripe', 'charge.refunded')
    # Then the period's credits are taken back: the grant was booked under the invoice's PaymentIntent
    assert answers(out) == ['processed'] and '1000 credits taken back' in out
    assert balance(user) == 0


# ---------------------------------------------------------------- the README and the remaining options


def readme_trigger_block() -> list[str]:
    """The trigger commands of README "Buy credits locally", in order, without their comments."""
    text = (ROOT / 'README.md').read_text()
    block = text[text.index('T=".venv/bin/python -m infra.local trigger"') :]
    block = block[: block.index('```')]
    return [line.split('#', 1)[0].strip() for line in block.splitlines() if line.startswith('$T ')]


def test_the_readme_trigger_block_runs_top_to_bottom(stack: Stack, trigger: Cli):
    # Given a user, and another account for the transfer
    user, other = stack.sign_in(), stack.sign_in()
    lines = readme_trigger_block()
    assert len(lines) == 20
    # When every command of the README is run in order
    for line in lines:
        words = line.replace('<other account>', other.account_id).split()[1:]
        provider, event = words[0], words[1]
        options = [w for w in words[2:] if w not in ('--token', '$TOKEN')]
        if '--account' in options:
            options[options.index('$ACCOUNT')] = user.account_id
        # Then each is sent and answered 2xx (exit 0)
        trigger(user, provider, event, *options)
    # And the balance is what the README says
    assert (balance(user), me(user)['plan']) == (3300, 'pro')


def test_the_offline_gateway_lists_the_fakes_and_no_api_route_is_shadowed(stack: Stack):
    services = httpx.get(f'{stack.url}/_local/services').json()['services']
    assert set(services) >= {'stripe', 'revenuecat'} and services['stripe'].startswith('http://127.0.0.1:')
    assert httpx.post(f'{stack.url}/_local/services').status_code != 200  # GET only


def test_a_won_dispute_closed_gives_the_credits_back(stack: Stack, trigger: Cli):
    user = stack.sign_in()
    trigger(user, 'stripe', 'checkout.session.completed', '--pack', 'pack_100')
    trigger(user, 'stripe', 'charge.dispute.created')
    assert balance(user) == 0
    assert answers(trigger(user, 'stripe', 'charge.dispute.closed', '--status', 'won')) == ['processed']
    assert balance(user) == 100


def test_an_upgrade_invoice_tops_the_period_up(stack: Stack, trigger: Cli):
    # Given a pro subscriber with its period's 1,000 credits
    user = stack.sign_in()
    trigger(user, 'stripe', 'invoice.paid', '--plan', 'pro')
    assert balance(user) == 1000
    # When a subscription_update invoice of the same plan and period is paid (a proration)
    out = trigger(user, 'stripe', 'invoice.paid', '--billing-reason', 'subscription_update')
    # Then the period is not granted twice: the same plan tops up nothing
    assert answers(out) == ['processed']
    assert (me(user)['plan'], balance(user)) == ('pro', 1000)


def test_a_store_trial_turns_the_plan_on_without_credits(stack: Stack, trigger: Cli):
    user = stack.sign_in()
    out = trigger(user, 'revenuecat', 'INITIAL_PURCHASE', '--trial')
    assert '"period_type": "TRIAL"' in out
    assert (me(user)['plan'], balance(user)) == ('pro', 0)
