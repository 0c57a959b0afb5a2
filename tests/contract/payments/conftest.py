"""Contract tests run through the same moto world as the payments integration tests."""

from tests.integration.payments.conftest import env, world  # noqa: F401  (fixtures)
