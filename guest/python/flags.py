"""Flags and output for the examples: `--name value` from the command line,
and lines printed at once (tests read them as they come)."""

import sys


def flag(name, default=None):
    args = sys.argv
    key = f"--{name}"
    return args[args.index(key) + 1] if key in args[:-1] else default


def has(name):
    return f"--{name}" in sys.argv


def say(line):
    print(line, flush=True)
