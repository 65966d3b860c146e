/**
 * The differential test: test/programs/diff_workload, driven by a seed, writes, reads, forks (children with their
 * own sub-sequence, some exiting at once), mremaps (move, grow, shrink), madvises DONTNEED, munmaps, maps
 * MAP_FIXED over its regions and starts threads, then prints a digest of its memory and its children's. Run
 * uninterrupted, and dumped at step K and restored lazily, the digests must match; the page service must have
 * seen every kind of non-cooperative event over the runs. scripts/soak.mjs does the same for many seeds.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { tempDir } from './support/restore.js';
import { countingService, plainDigest, restoredDigest } from './support/differential.js';

const SEEDS = [1, 2, 3, 4, 5];
const STEPS = 160;
const KS = [0, 1, 40, 120];

const tmp = tempDir('differential');
const { service, counts, errors } = countingService();
let store: ImageStore;

before(async () => {
  store = await ImageStore.open(join(tmp.path, 'store'));
});

after(async () => {
  await service.close({ closeUffds: true });
  await store?.close();
  tmp.remove();
});

for (const seed of SEEDS) {
  test(`seed ${seed}: dumped at step K and restored lazily, the digest is the uninterrupted one`, async (t) => {
    const want = await plainDigest(tmp.path, seed, STEPS);
    for (const k of KS) {
      const run = await restoredDigest(store, tmp.path, seed, STEPS, k, service);
      assert.equal(run.digest, want, `seed ${seed} K ${k}`);
      assert.deepEqual(run.completion.errors, [], `seed ${seed} K ${k}`);
      t.diagnostic(`K ${k}: ${run.completion.faultPages} pages by fault, ${run.completion.backgroundPages} background`);
    }
  });
}

test('the page service saw fork, remap, remove and unmap events in restored tasks, and no error', () => {
  assert.deepEqual(errors, []);
  for (const kind of ['fork', 'remap', 'remove', 'unmap'] as const) assert.ok(counts[kind] > 0, `no ${kind} event`);
  assert.equal(service.stats().length, 0, 'every task is released');
});
