"""The seed's election example, as a component: stand in `test`, say so on
leading and on losing. Flags: --name test --id ID --address IP:PORT
--ttl-ms 10000 --resign-after-ms N (lead N ms, resign, exit), --decide (on
a leadership transfer, say so and resign, rather than step down at once:
the SDK's on_transfer). For the
benchmark: --noop (exit at once), --bench N (time N is-leader calls next to
N calls of a WASI import that does nothing, as the Rust probe does)."""

import sys

from wit_world import exports
from flags import flag, has, say
from metaparticle_sync import Election, sleep
from wit_world.imports import monotonic_clock


def bench(election, n):
    election.campaign()

    def time(f):
        start = monotonic_clock.now()
        yes = sum(1 for _ in range(n) if f())
        return monotonic_clock.now() - start, yes

    time(election.is_leader)
    leader_ns, yes = time(election.is_leader)
    noop_ns, _ = time(lambda: monotonic_clock.resolution() > 0)
    if yes != n:
        raise RuntimeError("is-leader turned false during the benchmark")
    say(f"bench iterations={n} is_leader_ns={leader_ns} noop_ns={noop_ns}")
    election.resign()


def hand_over(election, request):
    """What an app that decides does with a transfer: finish what it is
    doing (nothing, here), then resign; `run()` campaigns again."""
    say(f"Transfer asked: to {request.to or 'anyone'}; still the leader: {str(election.is_leader()).lower()}")
    election.resign()
    say("I resigned")


class Run(exports.Run):
    def run(self) -> None:
        if "--noop" in sys.argv:
            return
        resign_after = flag("resign-after-ms")
        election = Election(
            flag("name", "test"),
            lambda leader: say(f"I am the leader (fencing token {leader.token})"),
            lambda: say("I lost the leader"),
            ttl_ms=int(flag("ttl-ms", "10000")),
            candidate=flag("id"),
            address=flag("address"),
            on_transfer=(lambda request: hand_over(election, request)) if has("decide") else None,
        )
        if flag("bench") is not None:
            bench(election, int(flag("bench")))
            return
        if resign_after is None:
            election.run()
        election.campaign()
        sleep(int(resign_after) / 1000)
        if election.is_leader():
            election.resign()
            say("I resigned")
