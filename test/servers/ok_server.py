"""A well-behaved server: /health gives {"message": "ok"}."""
from _serve import ok, serve

serve({"/health": ok})
