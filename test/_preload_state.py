"""A preloaded module with state a server may change: each server must see it fresh."""
COUNTER = [0]
