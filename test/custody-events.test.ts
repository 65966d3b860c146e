/**
 * Custody with events: the differential workload (forks, mremap, madvise, munmap, MAP_FIXED, threads) is dumped at
 * step K and restored lazily by `lazyrestore restore --no-prefetch` (its own page service, in custody); the
 * command is killed with SIGKILL as soon as the journal holds a fork, remap, remove or unmap, and a daemon started
 * then takes the tree over by replaying the journal. The digest must equal that of an uninterrupted run: the
 * replayed lazy state is exact, in the parent and in the children it forked.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from '../daemon/dump/index.js';
import { startDaemon } from '../daemon/service.js';
import { ImageStore } from '../daemon/store/index.js';
import { plainDigest } from './support/differential.js';
import { repoRoot } from './support/programs.js';
import { killAll, lazyMissing, leftOver, tempDir, until, Workload } from './support/restore.js';

const SEEDS = [3, 5];
const STEPS = 160;
const K = 20;
const ATTEMPTS = 4;
const DIGEST = /^DIGEST ([0-9a-f]+)$/m;

const tmp = tempDir('custody-events');
const children: ChildProcess[] = [];
const workloads: Workload[] = [];
const noLazy = lazyMissing();

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const w of workloads) w.kill();
  await leftOver(workloads.map((w) => w.pid));
  tmp.remove();
});

function journalText(custody: string): string {
  if (!existsSync(custody)) return '';
  return readdirSync(custody)
    .filter((f) => f.endsWith('.journal'))
    .map((f) => readFileSync(join(custody, f), 'utf8'))
    .join('');
}

for (const seed of SEEDS) {
  test(`seed ${seed}: killed after the first journaled event, taken over, the same digest`, async (t) => {
    if (noLazy) return t.skip(`lazy restore unsupported: ${noLazy}`);
    const dir = join(tmp.path, `seed-${seed}`);
    const data = join(dir, 'data');
    const custody = join(dir, 'custody');
    const plain = await plainDigest(tmp.path, seed, STEPS);

    const store = await ImageStore.open(data);
    const go = join(dir, 'go');
    const w = new Workload(join(dir, 'out.txt'), 'diff_workload', [String(seed), String(STEPS), String(K), go]);
    workloads.push(w);
    await w.started();
    await w.waitOutput(/^PAUSE \d+$/m);
    await dump(store, w.pid, { name: 'w' });
    await w.reaped();
    await store.close();
    const dumpedSize = w.output().length;
    writeFileSync(go, '');

    const env = { ...process.env, LAZYRESTORE_SOCKET: join(dir, 'api.sock') };
    let replayed = '';
    for (let attempt = 1; attempt <= ATTEMPTS && replayed === ''; attempt++) {
      truncateSync(w.out, dumpedSize);
      const cli = spawn(
        process.execPath,
        [join(repoRoot, 'dist', 'cli', 'main.js'), 'restore', 'w', '--data-dir', data, '--no-prefetch'],
        { env, stdio: 'ignore' },
      );
      children.push(cli);
      const journaled = await until(
        'an event in the journal, or the end of the run',
        () => /^[FMXU] .*$/m.exec(journalText(custody))?.[0] ?? (DIGEST.test(w.output()) ? 'none' : undefined),
        60_000,
      );
      cli.kill('SIGKILL');
      await until('the command to die', () => (cli.signalCode || cli.exitCode !== null ? true : undefined));
      if (journaled === 'none') {
        t.diagnostic(`attempt ${attempt}: the run ended before any event was journaled`);
        continue;
      }
      const daemon = await startDaemon({ socketPath: join(dir, 'api.sock'), dataDir: data, logLevel: 'silent' });
      try {
        if (daemon.recovery.killed.length > 0) {
          t.diagnostic(`attempt ${attempt}: ${daemon.recovery.killed.map((k) => k.reason).join('; ')}`);
          killAll([w.pid]);
          await leftOver([w.pid]);
          continue;
        }
        assert.ok(daemon.recovery.adopted.length >= 1, 'the tree was taken over');
        const m = await w.waitOutput(DIGEST, 120_000);
        assert.equal(m[1], plain, `seed ${seed}: the digest after a takeover that replayed "${journaled}"`);
        await leftOver([w.pid]);
        replayed = journaled;
      } finally {
        await daemon.close();
      }
    }
    assert.notEqual(replayed, '', `a takeover with a journaled event in one of ${ATTEMPTS} attempts`);
    t.diagnostic(`seed ${seed}: replayed from "${replayed}" on`);
  });
}
