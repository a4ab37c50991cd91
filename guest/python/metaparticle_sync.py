"""@metaparticle/sync's API on the metaparticle:sync WIT, for Python
components (componentize-py, world `app` of ../../wit).

    lock = Lock("test", on_acquired, on_lost)
    lock.lock()          # blocks until held, then calls on_acquired
    sleep(45.0)          # waits, renewing and watching the lease
    lock.unlock()

    Election("test", on_leader, on_lost).run()   # campaigns for ever

    SharedLock("pool", on_acquired, on_lost, permits=4).lock()   # one of 4
    SharedLock("book", on_acquired, on_lost).lock()   # a reader; a Lock is the writer

A component has no background: the provider renews when the app calls in.
So this module owns the waiting: `sleep` (and `run`) wait on the leases'
pollables and a timer together; every wake lets the provider renew, and a
lease found lost calls its on_lost at once. Use `sleep` where the seed used
`setTimeout`.
"""

from componentize_py_types import Err
from wit_world.imports import election as wit_election
from wit_world.imports import lock as wit_lock
from wit_world.imports import shared as wit_shared
from wit_world.imports import monotonic_clock, poll

FOREVER = 2**64 - 1  # u64::MAX milliseconds
_live = set()


def describe(error):
    """`held-by: alice`, `unavailable: …`: the WIT error of an `Err`."""
    value = error.value if isinstance(error, Err) else error
    name = type(value).__name__.replace("Error_", "")
    detail = getattr(value, "value", None)
    return name if detail is None else f"{name}: {detail}"


def sleep(seconds, done=lambda: False):
    """Waits, keeping every lease of this component alive and calling
    on_lost for any found lost; returns early once done() is true after
    those checks."""
    until = monotonic_clock.now() + int(max(0.0, seconds) * 1e9)
    while True:
        # Subscribe, then look, then wait: a loss between the look and the
        # wait still wakes us.
        handles = list(_live)
        pollables = [h.subscribe() for h in handles]
        try:
            for h in handles:
                h.check()
            left = until - monotonic_clock.now()
            if left <= 0 or done():
                return
            timer = monotonic_clock.subscribe_duration(left)
            poll.poll([timer, *pollables])
            timer.__exit__(None, None, None)
        finally:
            for p in pollables:
                p.__exit__(None, None, None)


class Lock:
    """A named lock, as in the seed: `on_acquired(lease)` is called when
    `lock()` gets it, `on_lost()` when it is lost (without one, the
    program stops)."""

    def __init__(self, name, on_acquired=None, on_lost=None, ttl_ms=None, holder=None, inner=None):
        self.name = name
        self.on_acquired = on_acquired or (lambda lease: None)
        self.on_lost = on_lost
        self.inner = inner or wit_lock.Lock(name, wit_lock.LockOptions(ttl_ms=ttl_ms, holder=holder))
        self.held = False

    def lock(self):
        """Blocks until the lock is held (waiting in line: waiters get it in
        the order they came), then calls on_acquired."""
        try:
            lease = self.inner.lock_within(FOREVER)
        except Err as e:
            raise RuntimeError(f"lock {self.name}: {describe(e)}") from None
        self.held = True
        _live.add(self)
        self.on_acquired(lease)
        return lease

    def unlock(self):
        """Releases the lock at once; raises if the elector could not
        confirm it."""
        _live.discard(self)
        self.held = False
        try:
            self.inner.unlock()
        except Err as e:
            raise RuntimeError(f"unlock {self.name}: {describe(e)}") from None

    def lease(self):
        """The lease while held, else None: check it right before acting."""
        return self.inner.lease()

    def subscribe(self):
        return self.inner.subscribe()

    def check(self):
        if self.held and self.inner.lease() is None:
            self.held = False
            _live.discard(self)
            if self.on_lost is None:
                raise SystemExit(f"lost the lock {self.name} and no on_lost handler was given")
            self.on_lost()


class SharedLock(Lock):
    """A shared hold of a lock, with Lock's callbacks: one of any number of
    readers (no `permits`; a Lock of the same name is the writer, and waits
    for every reader), or one of `permits` holders of a counting semaphore.
    Each hold has its own lease and fencing token; `permit()` says which of
    a semaphore's permits it is."""

    def __init__(self, name, on_acquired=None, on_lost=None, ttl_ms=None, holder=None, permits=None):
        options = wit_shared.SharedOptions(ttl_ms=ttl_ms, holder=holder, permits=permits)
        super().__init__(name, on_acquired, on_lost, inner=wit_shared.SharedLock(name, options))

    def permit(self):
        """Semaphores: which permit this hold is, while held."""
        return self.inner.permit()


class Election:
    """A leader election, as in the seed: `run()` campaigns for ever,
    calling on_leader(leader) on winning and on_lost() on losing.

    A transfer of the leadership asked of this candidate (`mpsync leader
    NAME --transfer-to ID`) makes it step down at once, like a resignation
    (on_lost, and `run()` campaigns again). With `on_transfer=f` it keeps
    leading instead: f(request) is called once, when a request first shows (`request.to`:
    the candidate asked for, or None for anyone else), and the app calls
    `resign()` when its work is handed off."""

    def __init__(
        self, name, on_leader=None, on_lost=None, ttl_ms=None, candidate=None, address=None, on_transfer=None
    ):
        self.name = name
        self.on_leader = on_leader or (lambda leader: None)
        self.on_lost = on_lost or (lambda: None)
        self.on_transfer = on_transfer
        options = wit_election.ElectionOptions(ttl_ms=ttl_ms, candidate=candidate, address=address)
        self.inner = wit_election.Election(name, options)
        if on_transfer is not None:
            self.inner.step_down_on_transfer(False)
        self.leading = False
        self.asked = False

    def run(self):
        """Campaigns, leads while it can, campaigns again: never returns."""
        while True:
            self.campaign()
            # Until it loses, steps down on a transfer, or resigns (on_transfer).
            sleep(3600.0 * 24 * 365, lambda: not self.leading)

    def campaign(self):
        """Blocks until this candidate leads, then calls on_leader."""
        try:
            leader = self.inner.campaign(FOREVER)
        except Err as e:
            raise RuntimeError(f"campaign {self.name}: {describe(e)}") from None
        self.leading = True
        _live.add(self)
        self.on_leader(leader)
        return leader

    def resign(self):
        """Steps down at once; raises if the elector could not confirm it."""
        _live.discard(self)
        self.leading = False
        self.asked = False
        try:
            self.inner.resign()
        except Err as e:
            raise RuntimeError(f"resign {self.name}: {describe(e)}") from None

    def is_leader(self):
        return self.inner.is_leader()

    def transfer_requested(self):
        """The hand-over asked of this candidate while it leads (`.to`),
        else None; by default it steps down at once, so only an election
        made with on_transfer sees one for long."""
        return self.inner.transfer_requested()

    def subscribe(self):
        return self.inner.subscribe()

    def check(self):
        if self.leading and not self.inner.is_leader():
            self.leading = False
            self.asked = False
            _live.discard(self)
            self.on_lost()
        elif self.leading and self.on_transfer is not None and not self.asked:
            request = self.inner.transfer_requested()
            if request is not None:
                self.asked = True
                self.on_transfer(request)
