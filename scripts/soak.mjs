#!/usr/bin/env node
// The differential soak (test/differential.test.ts, longer): for N seeds from FIRST, runs
// test/programs/bin/diff_workload uninterrupted, then dumped at each K and restored lazily, and
// compares the digests. Prints one line per failure with its seed and K, to reproduce with
//   node scripts/soak.mjs 1 <seed> <steps> <K>
// Needs a build (node scripts/setup.mjs) and root. Exits 1 if anything failed.
// Usage: node scripts/soak.mjs [N=20] [FIRST=1] [STEPS=200] [K,K,...=0,1,50,150]
import { dirname, join } from 'node:path';
import { clearInterval, setInterval } from 'node:timers';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { ImageStore } = await import(join(root, 'dist/daemon/store/index.js'));
const { tempDir } = await import(join(root, 'dist/test/support/restore.js'));
const { countingService, plainDigest, restoredDigest } = await import(join(root, 'dist/test/support/differential.js'));

const [n = '20', first = '1', stepsArg = '200', ksArg = '0,1,50,150'] = process.argv.slice(2);
const steps = Number(stepsArg);
const ks = ksArg.split(',').map(Number);
const tmp = tempDir('soak');
const store = await ImageStore.open(join(tmp.path, 'store'));
const { service, counts, errors } = countingService();
const failures = [];
// Keeps the event loop alive across restores whose roots this process reaps.
const keep = setInterval(() => undefined, 1000);
try {
  for (let seed = Number(first); seed < Number(first) + Number(n); seed++) {
    let want;
    try {
      want = await plainDigest(tmp.path, seed, steps);
    } catch (e) {
      failures.push(`seed ${seed} plain: ${e.message}`);
      continue;
    }
    for (const k of ks) {
      try {
        const run = await restoredDigest(store, tmp.path, seed, steps, k, service);
        if (run.digest !== want) failures.push(`seed ${seed} K ${k}: digest ${run.digest}, uninterrupted ${want}`);
        else if (run.completion.errors.length > 0) failures.push(`seed ${seed} K ${k}: ${run.completion.errors}`);
        await store.remove(`diff-${seed}-${steps}-${k}`);
      } catch (e) {
        failures.push(`seed ${seed} K ${k}: ${e.message}`);
      }
    }
    process.stdout.write(`seed ${seed} done, ${failures.length} failure(s) so far\n`);
  }
} finally {
  clearInterval(keep);
  await service.close({ closeUffds: true });
  await store.close();
  tmp.remove();
}
for (const f of failures) process.stdout.write(`FAIL ${f}\n`);
process.stdout.write(
  `${n} seeds x ${ks.length} K, ${steps} steps: ${failures.length} failure(s); events ${JSON.stringify(counts)}; ` +
    `service errors ${errors.length}\n`,
);
process.exit(failures.length > 0 || errors.length > 0 ? 1 : 0);
