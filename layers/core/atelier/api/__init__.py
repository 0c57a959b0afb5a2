"""HTTP plumbing shared by the API functions: resolver, error envelope, authentication."""

from atelier.api.http import create_resolver, resolve

__all__ = ['create_resolver', 'resolve']
