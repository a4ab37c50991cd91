// The seed's election example, as a component: stand in `test`, say so on
// leading and on losing. Flags: --name test --id ID --address IP:PORT
// --ttl-ms 10000 --resign-after-ms N (lead N ms, resign, exit), --decide (on a
// leadership transfer, say so and resign, rather than step down at once: the
// SDK's onTransfer). For the
// benchmark: --noop (exit at once), --bench N (time N is-leader calls next
// to N calls of a WASI import that does nothing, as the Rust probe does).
import { Election, sleep } from './sync.js';
import { flag, has } from './flags.js';
import { now, resolution } from 'wasi:clocks/monotonic-clock@0.2.12';

function bench(election, n) {
  election.campaign();
  const time = (f) => {
    const start = now();
    let yes = 0;
    for (let i = 0; i < n; i++) {
      if (f()) yes++;
    }
    return [now() - start, yes];
  };
  time(() => election.isLeader());
  const [leaderNs, yes] = time(() => election.isLeader());
  const [noopNs] = time(() => resolution() > 0n);
  if (yes !== n) throw new Error('is-leader turned false during the benchmark');
  console.log(`bench iterations=${n} is_leader_ns=${leaderNs} noop_ns=${noopNs}`);
  election.resign();
}

// What an app that decides does with a transfer: finish what it is doing
// (nothing, here), then resign; `run()` campaigns again.
function handOver(election, request) {
  console.log(`Transfer asked: to ${request.to ?? 'anyone'}; still the leader: ${election.isLeader()}`);
  election.resign();
  console.log('I resigned');
}

export const run = {
  run() {
    if (has('noop')) {
      return;
    }
    const resignAfter = flag('resign-after-ms', undefined);
    const election = new Election(
      flag('name', 'test'),
      (leader) => console.log(`I am the leader (fencing token ${leader.token})`),
      () => console.log('I lost the leader'),
      {
        ttlMs: Number(flag('ttl-ms', '10000')),
        candidate: flag('id', undefined),
        address: flag('address', undefined),
        onTransfer: has('decide') ? (request) => handOver(election, request) : undefined,
      },
    );
    const n = flag('bench', undefined);
    if (n !== undefined) {
      bench(election, Number(n));
      return;
    }
    if (resignAfter === undefined) {
      election.run();
    }
    election.campaign();
    sleep(Number(resignAfter));
    if (election.isLeader()) {
      election.resign();
      console.log('I resigned');
    }
  },
};
