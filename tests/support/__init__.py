"""Test helpers shared across test suites (DynamoDB Local launcher, ...)."""
