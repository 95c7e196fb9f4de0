"""A well-behaved server: /health gives {"message": "ok"}."""
from _serve import serve, ok
serve({"/health": ok})
