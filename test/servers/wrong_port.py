"""Ignores $PORT and listens on a port of its own choosing."""
from _serve import ok, serve

serve({"/health": ok}, port=0)
