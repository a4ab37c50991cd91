"""The seed's election example, as a component: stand in `test`, say so on
leading and on losing. Flags: --name test --id ID --address IP:PORT
--ttl-ms 10000 --resign-after-ms N (lead N ms, resign, exit)."""

import sys

from wit_world import exports
from metaparticle_sync import Election, sleep


def flag(name, default=None):
    args = sys.argv
    key = f"--{name}"
    return args[args.index(key) + 1] if key in args[:-1] else default


def say(line):
    print(line, flush=True)


class Run(exports.Run):
    def run(self) -> None:
        resign_after = flag("resign-after-ms")
        election = Election(
            flag("name", "test"),
            lambda leader: say(f"I am the leader (fencing token {leader.token})"),
            lambda: say("I lost the leader"),
            ttl_ms=int(flag("ttl-ms", "10000")),
            candidate=flag("id"),
            address=flag("address"),
        )
        if resign_after is None:
            election.run()
        election.campaign()
        sleep(int(resign_after) / 1000)
        if election.is_leader():
            election.resign()
            say("I resigned")
