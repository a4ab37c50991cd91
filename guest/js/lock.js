// The seed's lock example, as a component: lock `test`, hold it, unlock.
// Flags (as the Rust example's): --name test --id ID --ttl-ms 10000
// --hold-ms 45000.
import { Lock, sleep } from './sync.js';
import { flag, has } from './flags.js';

export const run = {
  run() {
    const hold = Number(flag('hold-ms', '45000'));
    const lock = new Lock(
      flag('name', 'test'),
      (lease) => {
        console.log(`I have the lock! (fencing token ${lease.token})`);
        console.log(`Holding the lock for ${hold / 1000} seconds`);
      },
      () => {
        console.log('I lost the lock!');
      },
      { ttlMs: Number(flag('ttl-ms', '10000')), holder: flag('id', undefined) },
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
