"""A module that installs a signal handler when imported (as some frameworks do)."""
import signal

signal.signal(signal.SIGUSR2, lambda signum, frame: None)
