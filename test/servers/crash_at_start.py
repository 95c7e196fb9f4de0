"""Dies during start-up: a config error on stderr, exit code 3."""
import sys

sys.stderr.write("FATAL: config file settings.toml not found\n")
sys.exit(3)
