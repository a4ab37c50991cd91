// The seed's election example, as a component: stand in `test`, say so on
// leading and on losing. Flags: --name test --id ID --address IP:PORT
// --ttl-ms 10000 --resign-after-ms N (lead N ms, resign, exit).
import { Election, sleep } from './sync.js';
import { getArguments } from 'wasi:cli/environment@0.2.12';

function flag(name, fallback) {
  const args = getArguments();
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

export const run = {
  run() {
    const resignAfter = flag('resign-after-ms', undefined);
    const election = new Election(
      flag('name', 'test'),
      (leader) => console.log(`I am the leader (fencing token ${leader.token})`),
      () => console.log('I lost the leader'),
      { ttlMs: Number(flag('ttl-ms', '10000')), candidate: flag('id', undefined), address: flag('address', undefined) },
    );
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
