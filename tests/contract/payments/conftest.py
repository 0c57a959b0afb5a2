"""Contract tests run through the same moto world as the payments integration tests."""

from tests.integration.payments.conftest import env, stripe_fake, world  # noqa: F401  (fixtures)
