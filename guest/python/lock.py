"""The seed's lock example, as a component: lock `test`, hold it, unlock.
Flags (as the Rust example's): --name test --id ID --ttl-ms 10000
--hold-ms 45000."""

from wit_world import exports
from flags import flag, say
from metaparticle_sync import Lock, sleep


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
