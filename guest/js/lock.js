// The seed's lock example, as a component: lock `test`, hold it, unlock.
// Flags (as the Rust example's): --name test --id ID --ttl-ms 10000
// --hold-ms 45000; --shared holds it as a reader, --permits N as one of N
// holders of a semaphore.
import { Lock, SharedLock, sleep } from './sync.js';
import { flag, has } from './flags.js';

export const run = {
  run() {
    const hold = Number(flag('hold-ms', '45000'));
    const permits = flag('permits', undefined);
    const Kind = has('shared') || permits !== undefined ? SharedLock : Lock;
    const lock = new Kind(
      flag('name', 'test'),
      (lease) => {
        const permit = Kind === SharedLock ? lock.permit() : undefined;
        const which = permit === undefined ? '' : `, permit ${permit}`;
        console.log(`I have the lock! (fencing token ${lease.token}${which})`);
        console.log(`Holding the lock for ${hold / 1000} seconds`);
      },
      () => {
        console.log('I lost the lock!');
      },
      {
        ttlMs: Number(flag('ttl-ms', '10000')),
        holder: flag('id', undefined),
        permits: permits === undefined ? undefined : Number(permits),
      },
    );
    console.log('Attempting to lock');
    lock.lock();
    sleep(hold);
    if (lock.lease() !== undefined) {
      lock.unlock();
      console.log('Unlocked');
    }
  },
};
