"""The seed's lock example, as a component: lock `test`, hold it, unlock.
Flags (as the Rust example's): --name test --id ID --ttl-ms 10000
--hold-ms 45000; --shared holds it as a reader, --permits N as one of N
holders of a semaphore."""

from wit_world import exports
from flags import flag, has, say
from metaparticle_sync import Lock, SharedLock, sleep


class Run(exports.Run):
    def run(self) -> None:
        hold = int(flag("hold-ms", "45000")) / 1000

        permits = flag("permits")
        shared = has("shared") or permits is not None

        def acquired(lease):
            permit = lock.permit() if shared else None
            which = "" if permit is None else f", permit {permit}"
            say(f"I have the lock! (fencing token {lease.token}{which})")
            say(f"Holding the lock for {hold:g} seconds")

        options = dict(ttl_ms=int(flag("ttl-ms", "10000")), holder=flag("id"))
        if shared:
            permits = None if permits is None else int(permits)
            lock = SharedLock(flag("name", "test"), acquired, lambda: say("I lost the lock!"), permits=permits, **options)
        else:
            lock = Lock(flag("name", "test"), acquired, lambda: say("I lost the lock!"), **options)
        say("Attempting to lock")
        lock.lock()
        sleep(hold)
        if lock.lease() is not None:
            lock.unlock()
            say("Unlocked")
