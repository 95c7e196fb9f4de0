"""Runs forever and never opens its port."""
import threading

print("starting, but never listening", flush=True)
threading.Event().wait()
