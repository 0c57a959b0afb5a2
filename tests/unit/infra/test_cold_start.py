"""Heavy SDKs are imported only where they are used: cold start is a feature."""

from infra.bench.coldstart import Measurement, handler_modules, measure, stripe_violations


def test_only_payment_functions_import_stripe_at_cold_start():
    # Given every handler module the template names, each imported in a fresh interpreter
    results = [Measurement(name, module, *measure(module, runs=1)) for name, module in handler_modules().items()]
    # Then none but the payment functions loads stripe
    assert stripe_violations(results) == []
