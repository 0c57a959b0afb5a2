"""The local ``mock`` provider: an HTTP server that behaves like a real provider, and its adapter."""
