/**
 * Restore of a real interpreter: python3 running a script that prints a counter is dumped mid-run, restored
 * lazily, and goes on counting from where it was, in the same output file.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../daemon/store/index.js';
import { dump } from '../daemon/dump/index.js';
import { restoreImage } from '../daemon/restore/index.js';
import { keepAlive, killAll, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('restore-python');
after(() => tmp.remove());

function python(): string | null {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

test('python3 printing a counter continues after a lazy restore', async (t) => {
  const exe = python();
  if (exe === null) {
    t.skip('python3 is not installed');
    return;
  }
  const script = join(tmp.path, 'count.py');
  writeFileSync(
    script,
    'import time\ni = 0\nwhile True:\n    i += 1\n    print(f"count {i}", flush=True)\n    time.sleep(0.01)\n',
  );
  const store = await ImageStore.open(join(tmp.path, 'store'));
  const w = new Workload(join(tmp.path, 'out.txt'), exe, [script]);
  let pid = 0;
  try {
    pid = await w.started();
    await w.waitOutput(/^count 5$/m);
    await dump(store, pid, { name: 'python' });
    await w.reaped();
    const last = Number(/count (\d+)\n$/.exec(w.output())![1]);
    const tree = await restoreImage(store, 'python');
    await w.waitOutput(new RegExp(`^count ${last + 20}$`, 'm'));
    await keepAlive(tree.complete);
    await w.waitOutput(new RegExp(`^count ${last + 40}$`, 'm'));
    process.kill(pid, 'SIGKILL');
    const exit = await keepAlive(tree.exited);
    assert.equal(exit.kind, 'signaled');
    const lines = w.output().trimEnd().split('\n');
    lines.forEach((line, i) => assert.equal(line, `count ${i + 1}`));
    assert.ok(lines.length >= last + 40);
  } finally {
    w.kill();
    killAll([pid]);
    await store.close();
  }
});
