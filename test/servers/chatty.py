"""Writes 20 MB to stdout and 20 MB to stderr before listening."""
import sys

from _serve import ok, serve

line = "x" * 1023 + "\n"
for _ in range(20 * 1024):
    sys.stdout.write(line)
    sys.stderr.write(line)
sys.stdout.flush()
sys.stderr.write("END-OF-OUTPUT\n")
sys.stderr.flush()
serve({"/health": ok})
