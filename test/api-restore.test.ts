/**
 * Restores through the daemon's API, on a real socket, of images made by real dumps through the same API:
 * 202 with Location and the restore followed until complete (the restored program checks its own memory);
 * 20 restores at once while malformed requests keep coming (each restore verifies, each bad request gets its
 * 4xx problem+json); an unknown image is 404, a pid in use 409 PID_IN_USE without any process left behind.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, type Daemon } from '../daemon/service.js';
import { DaemonClient, type Answer } from '../cli/client.js';
import type { ProblemBody, RestoreBody } from '../api/schemas.js';
import { killAll, lazyMissing, leftOver, sleep, tempDir, Workload } from './support/restore.js';

const tmp = tempDir('api-restore');
let daemon: Daemon;
let api: DaemonClient;
const workloads: Workload[] = [];
const pids: number[] = [];

const noLazy = lazyMissing();

before(async () => {
  daemon = await startDaemon({
    socketPath: join(tmp.path, 'api.sock'),
    dataDir: join(tmp.path, 'data'),
    logLevel: 'silent',
  });
  api = new DaemonClient({ socketPath: daemon.socketPath });
});

after(async () => {
  for (const w of workloads) w.kill();
  killAll(pids);
  await leftOver(pids);
  await daemon?.close();
  tmp.remove();
});

/** Starts restore_mem (SIZE MiB) and dumps it through the API as `name`; returns the workload (its pid free). */
async function dumpedWorkload(name: string, mib: number, leaveRunning = false): Promise<Workload> {
  const w = new Workload(join(tmp.path, `${name}.out`), 'restore_mem', [String(mib), join(tmp.path, `${name}.go`)]);
  workloads.push(w);
  const pid = await w.started();
  pids.push(pid);
  await w.waitOutput(/^tick 2$/m);
  const r = await api.dump({ pid, name, leaveRunning });
  assert.equal(r.rootPid, pid);
  if (!leaveRunning) await w.reaped();
  return w;
}

function problem(a: Answer, status: number, code: string): ProblemBody {
  assert.equal(a.status, status, a.body);
  assert.match(a.contentType, /^application\/problem\+json/);
  const p = JSON.parse(a.body) as ProblemBody;
  assert.equal(p.code, code, a.body);
  assert.equal(p.status, status);
  assert.equal(p.type, `urn:lazyrestore:problem:${code}`);
  return p;
}

/** Polls GET /v1/restores/{id} until the restore is complete or failed. */
async function settled(id: string, timeoutMs = 60_000): Promise<RestoreBody> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await api.restoreStatus(id);
    if (r.state === 'complete' || r.state === 'failed') return r;
    if (Date.now() > deadline) throw new Error(`restore ${id} still ${r.state}`);
    await sleep(20);
  }
}

/** The pids of the children of this process (the daemon's restored roots are among them). */
function children(): Set<number> {
  const out = new Set<number>();
  for (const t of readdirSync(`/proc/${process.pid}/task`)) {
    const text = readFileSync(`/proc/${process.pid}/task/${t}/children`, 'utf8').trim();
    for (const p of text.split(/\s+/)) if (p !== '') out.add(Number(p));
  }
  return out;
}

test('POST /v1/restores: 202 with Location, followed until complete; the program checks its memory', async (t) => {
  if (noLazy) return t.skip(`lazy restore unsupported: ${noLazy}`);
  const w = await dumpedWorkload('one', 32);
  const a = await api.send('POST', '/v1/restores', { image: 'one' });
  assert.equal(a.status, 202, a.body);
  const started = JSON.parse(a.body) as RestoreBody;
  assert.equal(a.headers['location'], `/v1/restores/${started.id}`);
  assert.ok(['restoring', 'running', 'complete'].includes(started.state), started.state);
  assert.equal(started.image, 'one');
  assert.equal(started.eager, false);

  const done = await settled(started.id);
  assert.equal(done.state, 'complete', JSON.stringify(done.error));
  assert.equal(done.rootPid, w.pid);
  assert.deepEqual(done.pids, [w.pid]);
  assert.deepEqual(done.progress, { tasks: 0, lazyPagesLeft: 0 });
  assert.ok(done.runningMs !== null && done.completeMs !== null && done.completeMs >= done.runningMs);
  const report = done.report!;
  assert.equal(report['mode'], 'lazy');
  assert.ok((report['faultPages'] as number) + (report['backgroundPages'] as number) >= (32 << 20) / 4096);
  t.diagnostic(
    `32 MiB through the API: running after ${done.runningMs.toFixed(1)} ms, complete after ${done.completeMs.toFixed(1)} ms`,
  );

  const job = await api.job(started.id);
  assert.equal(job.kind, 'restore');
  assert.equal(job.state, 'succeeded');
  assert.ok((await api.restores()).some((r) => r.id === started.id));

  writeFileSync(join(tmp.path, 'one.go'), '');
  await w.waitOutput(/^CHECK OK 32\nDONE$/m);
  assert.deepEqual(await leftOver([w.pid]), []);
});

test('a restore of an unknown image is 404 problem+json, and the restore shows how it failed', async () => {
  const p = problem(await api.send('POST', '/v1/restores', { image: 'no-such-image' }), 404, 'IMAGE_NOT_FOUND');
  assert.match(p.instance ?? '', /^\/v1\/restores\/[0-9a-f-]{36}$/);
  const r = await api.restoreStatus(p.instance!.split('/').pop()!);
  assert.equal(r.state, 'failed');
  assert.equal(r.error?.code, 'IMAGE_NOT_FOUND');
  assert.equal(r.error?.status, 404);
});

test('a restore whose pid is in use is 409 PID_IN_USE and leaves no process behind', async () => {
  const w = await dumpedWorkload('busy', 1, true);
  const before = children();
  const p = problem(await api.send('POST', '/v1/restores', { image: 'busy' }), 409, 'PID_IN_USE');
  assert.equal(p.pid, w.pid);
  assert.match(p.detail, new RegExp(`pid ${w.pid} is in use`));
  assert.deepEqual(
    [...children()].filter((c) => !before.has(c)),
    [],
    'no new child of the daemon',
  );
  // The original still runs, untouched.
  const ticks = (w.output().match(/^tick /gm) ?? []).length;
  await w.waitOutput(new RegExp(`^tick ${ticks + 2}$`, 'm'));
  w.kill();
  assert.deepEqual(await leftOver([w.pid]), []);
});

/** A malformed request and the status and code it must get. */
const BAD: Array<{
  method: string;
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  status: number;
  code: string;
}> = [
  { method: 'POST', path: '/v1/restores', body: '{"image": ', status: 400, code: 'INVALID_REQUEST' },
  { method: 'POST', path: '/v1/restores', body: { image: 'x', extra: 1 }, status: 400, code: 'INVALID_REQUEST' },
  { method: 'POST', path: '/v1/restores', body: { image: 'x', eager: 'yes' }, status: 400, code: 'INVALID_REQUEST' },
  { method: 'POST', path: '/v1/restores', body: { image: '../etc' }, status: 400, code: 'INVALID_REQUEST' },
  { method: 'POST', path: '/v1/restores', body: {}, status: 400, code: 'INVALID_REQUEST' },
  {
    method: 'POST',
    path: '/v1/restores',
    body: 'image=x',
    headers: { 'content-type': 'text/plain' },
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
  },
  { method: 'POST', path: '/v1/restores', body: { image: 'a'.repeat(70_000) }, status: 413, code: 'PAYLOAD_TOO_LARGE' },
  { method: 'GET', path: '/v1/restores/not-an-id', status: 400, code: 'INVALID_REQUEST' },
  { method: 'GET', path: '/v1/restores/00000000-0000-4000-8000-000000000000', status: 404, code: 'JOB_NOT_FOUND' },
  { method: 'DELETE', path: '/v1/restores', status: 404, code: 'ROUTE_NOT_FOUND' },
];

async function badRequests(stop: { done: boolean }): Promise<number> {
  let sent = 0;
  while (!stop.done) {
    for (const b of BAD) {
      const body = typeof b.body === 'string' ? b.body : b.body === undefined ? undefined : JSON.stringify(b.body);
      const a = await api.send(
        b.method,
        b.path,
        body,
        body === undefined ? {} : { 'content-type': 'application/json', ...b.headers },
      );
      problem(a, b.status, b.code);
      sent++;
    }
  }
  return sent;
}

test('20 restores at once while malformed requests keep coming: every restore verifies', async (t) => {
  if (noLazy) return t.skip(`lazy restore unsupported: ${noLazy}`);
  const N = 20;
  const names = Array.from({ length: N }, (_, i) => `small-${i}`);
  const ws = await Promise.all(names.map((n) => dumpedWorkload(n, 1)));
  const stop = { done: false };
  const bad = Promise.all([badRequests(stop), badRequests(stop), badRequests(stop)]).then((n) => n[0] + n[1] + n[2]);
  try {
    const answers = await Promise.all(names.map((image) => api.send('POST', '/v1/restores', { image })));
    const ids = answers.map((a) => {
      assert.equal(a.status, 202, a.body);
      const r = JSON.parse(a.body) as RestoreBody;
      assert.equal(a.headers['location'], `/v1/restores/${r.id}`);
      return r.id;
    });
    const done = await Promise.all(ids.map((id) => settled(id)));
    done.forEach((r, i) => {
      assert.equal(r.state, 'complete', JSON.stringify(r.error));
      assert.equal(r.rootPid, ws[i]!.pid);
    });
  } finally {
    stop.done = true;
  }
  const sent = await bad;
  assert.ok(sent >= BAD.length, `${sent} malformed requests`);
  t.diagnostic(`${sent} malformed requests answered during the restores`);
  for (const n of names) writeFileSync(join(tmp.path, `${n}.go`), '');
  await Promise.all(ws.map((w) => w.waitOutput(/^CHECK OK 1\nDONE$/m)));
  assert.deepEqual(await leftOver(ws.map((w) => w.pid)), []);
  assert.equal(existsSync(daemon.socketPath), true);
});
