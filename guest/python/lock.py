"""The seed's lock example, as a component: lock `test`, hold it, unlock.
Flags (as the Rust example's): --name test --id ID --ttl-ms 10000
--hold-ms 45000."""

import sys

from wit_world import exports
from metaparticle_sync import Lock, sleep


def flag(name, default=None):
    args = sys.argv
    key = f"--{name}"
    return args[args.index(key) + 1] if key in args[:-1] else default


def say(line):
    print(line, flush=True)


class Run(exports.Run):
    def run(self) -> None:
        hold = int(flag("hold-ms", "45000")) / 1000

        def acquired(lease):
            say(f"I have the lock! (fencing token {lease.token})")
            say(f"Holding the lock for {hold:g} seconds")

        lock = Lock(
            flag("name", "test"),
            acquired,
            lambda: say("I lost the lock!"),
            ttl_ms=int(flag("ttl-ms", "10000")),
            holder=flag("id"),
        )
        say("Attempting to lock")
        lock.lock()
        sleep(hold)
        if lock.lease() is not None:
            lock.unlock()
            say("Unlocked")
