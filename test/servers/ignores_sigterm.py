"""Serves, and ignores SIGTERM."""
import signal

from _serve import ok, serve

signal.signal(signal.SIGTERM, signal.SIG_IGN)
serve({"/health": ok})
