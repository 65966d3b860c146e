/**
 * `lazyrestore restore` end to end through the CLI: it restores an image lazily, serves its memory until every
 * task is complete, prints the summary (JSON here) and exits, while the restored program runs on. Failures are
 * one error document with a stable code and exit status 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { killAll, leftOver, tempDir, Workload } from './support/restore.js';
import { repoRoot } from './support/programs.js';

const run = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const tmp = tempDir('restore-cli');
const dataDir = join(tmp.path, 'store');
let w: Workload;
let pid = 0;
let dumpedSize = 0;

async function lazyrestore(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

before(async () => {
  const store = await ImageStore.open(dataDir);
  try {
    w = new Workload(join(tmp.path, 'out.txt'), 'restore_mem', ['32', join(tmp.path, 'go')]);
    pid = await w.started();
    await w.waitOutput(/^tick 2$/m);
    await dump(store, pid, { name: 'mem' });
    await w.reaped();
    dumpedSize = w.output().length;
  } finally {
    await store.close();
  }
});

after(() => {
  w?.kill();
  killAll([pid]);
  tmp.remove();
});

test('restore --json restores lazily, returns once complete, and the program runs on', async () => {
  const r = await lazyrestore(['restore', 'mem', '--data-dir', dataDir, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.equal(report['rootPid'], pid);
  assert.equal(report['mode'], 'lazy');
  assert.ok((report['runningMs'] as number) > 0 && (report['completeMs'] as number) >= (report['runningMs'] as number));
  assert.ok((report['faultPages'] as number) + (report['backgroundPages'] as number) >= (32 << 20) / 4096);
  assert.deepEqual(report['errors'], []);
  // The CLI has exited; its restored child was re-parented and keeps going.
  writeFileSync(join(tmp.path, 'go'), '');
  await w.waitOutput(/^CHECK OK 32\nDONE$/m);
  assert.deepEqual(await leftOver([pid]), []);
});

test('restore --eager prints a summary for people', async () => {
  truncateSync(w.out, dumpedSize);
  const r = await lazyrestore(['restore', 'mem', '--eager', '--data-dir', dataDir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Restored mem as process ${pid}$`, 'm'));
  assert.match(r.stdout, /running after +[\d.]+ ms/);
  assert.match(r.stdout, /mode +eager/);
  await w.waitOutput(/^CHECK OK 32\nDONE$/m); // the go file is still there
  assert.deepEqual(await leftOver([pid]), []);
});

test('restore of an unknown image fails with IMAGE_NOT_FOUND', async () => {
  const r = await lazyrestore(['restore', 'nope', '--data-dir', dataDir, '--json']);
  assert.equal(r.code, 1);
  assert.equal((JSON.parse(r.stdout) as { error: { code: string } }).error.code, 'IMAGE_NOT_FOUND');
  assert.match(r.stderr, /IMAGE_NOT_FOUND/);
});
