/**
 * The daemon's REST API on a real daemon (started in this process: real unix socket, real store in a temp
 * directory, real page service), driven over HTTP by cli/client.ts: images made by real dumps of
 * test/programs/dump_counter, a page-service task on a real userfaultfd (uffd_target), problem+json for every
 * failure, and the socket's permissions checked by connecting as nobody.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RestoreRegistry } from '../api/restores.js';
import { startDaemon, readPidMax, type Daemon } from '../daemon/service.js';
import { PageService, PageSource } from '../daemon/page-service.js';
import { JobRegistry } from '../daemon/jobs.js';
import { ImageStore } from '../daemon/store/index.js';
import { buildApi } from '../api/app.js';
import { listenUnix } from '../api/listen.js';
import { DaemonMetrics } from '../api/metrics.js';
import { native } from '../native/index.js';
import { DaemonApiError, DaemonClient, DaemonUnreachableError, type Answer } from '../cli/client.js';
import type { ProblemBody } from '../api/schemas.js';
import { Program } from './support/programs.js';
import { ask, EVENT_FEATURES, negotiate, PAGE, patternPages, randomSeed, startTarget } from './support/uffd.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function dumpUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'dumping other processes needs root (ptrace, /proc/<pid>/mem)';
  try {
    if (readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim() === '3') return 'ptrace is disabled (yama)';
  } catch {
    // no Yama
  }
  return null;
}
const noDump = dumpUnavailable() ?? false;

let dir: string;
let daemon: Daemon;
let api: DaemonClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lr-api-'));
  // Traversable by everyone, so that only the socket's own mode decides who may connect.
  chmodSync(dir, 0o755);
  daemon = await startDaemon({
    socketPath: join(dir, 'run', 'api.sock'),
    dataDir: join(dir, 'data'),
    logLevel: 'silent',
  });
  api = new DaemonClient({ socketPath: daemon.socketPath });
});

after(async () => {
  await daemon?.close();
  rmSync(dir, { recursive: true, force: true });
});

function json<T>(a: Answer): T {
  return JSON.parse(a.body) as T;
}

/** Asserts a problem+json answer with this status and code, and returns it. */
function problem(a: Answer, status: number, code: string): ProblemBody {
  assert.equal(a.status, status, a.body);
  assert.match(a.contentType, /^application\/problem\+json/);
  const p = json<ProblemBody>(a);
  assert.equal(p.status, status);
  assert.equal(p.code, code);
  assert.equal(p.type, `urn:lazyrestore:problem:${code}`);
  assert.equal(typeof p.title, 'string');
  assert.equal(typeof p.detail, 'string');
  assert.ok(!/\bat .*\.js:\d+/.test(a.body), 'no stack trace in a problem');
  return p;
}

/** The samples of /metrics by series (name and labels as written). */
async function metrics(): Promise<Map<string, number>> {
  const a = await api.send('GET', '/metrics');
  assert.equal(a.status, 200);
  assert.match(a.contentType, /^text\/plain; version=0\.0\.4/);
  const out = new Map<string, number>();
  for (const line of a.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/**
 * Ends a dump_* program: `quit` lets its relay reap the worker (a killed relay would leave the worker to an
 * init that may not reap it); SIGKILL if it does not exit.
 */
async function stop(prog: Program): Promise<void> {
  if (prog.child.exitCode !== null || prog.child.signalCode !== null) return;
  prog.send('quit');
  const timer = setTimeout(() => prog.kill(), 10_000);
  try {
    await prog.exit();
  } finally {
    clearTimeout(timer);
  }
}

/** Starts a test program and waits for its READY line; returns its pid. */
async function started(prog: Program): Promise<number> {
  try {
    const ready = await prog.waitFor('READY');
    const m = /pid=(\d+)/.exec(ready);
    return m === null ? prog.pid : Number(m[1]);
  } catch (e) {
    prog.kill();
    throw e;
  }
}

test('healthz and readyz answer; the socket is 0600 in a directory the daemon created 0755', async () => {
  const health = await api.health();
  assert.equal(health.status, 'ok');
  assert.equal(health.pid, process.pid);
  assert.deepEqual(await api.ready(), { status: 'ready', store: true, pageService: true });
  const sock = statSync(daemon.socketPath);
  assert.ok(sock.isSocket());
  assert.equal(sock.mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'run')).mode & 0o777, 0o755);
});

test('a non-root user cannot connect to the socket (EACCES)', (t) => {
  if (process.geteuid?.() !== 0) return t.skip('switching to nobody needs root');
  if (!existsSync('/usr/bin/setpriv')) return t.skip('setpriv is not installed');
  const script =
    "const s = require('net').connect(process.argv[1]);" +
    "s.on('connect', () => { console.log('CONNECTED'); s.destroy(); });" +
    "s.on('error', (e) => console.log(e.code));";
  const r = spawnSync(
    '/usr/bin/setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script, daemon.socketPath],
    { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'EACCES');
});

test('openapi.json documents every route with the schemas the API enforces', async () => {
  const a = await api.send('GET', '/openapi.json');
  assert.equal(a.status, 200);
  interface BodySchema {
    additionalProperties: boolean;
    properties: { pid: { maximum: number } };
  }
  const doc = json<{
    openapi: string;
    paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: BodySchema }> } }>>;
  }>(a);
  assert.match(doc.openapi, /^3\.1/);
  const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`));
  for (const r of [
    'get /healthz',
    'get /readyz',
    'get /metrics',
    'get /v1/images',
    'get /v1/images/{name}',
    'delete /v1/images/{name}',
    'post /v1/dumps',
    'get /v1/tasks',
    'get /v1/jobs',
    'get /v1/jobs/{id}',
  ]) {
    assert.ok(routes.includes(r), `${r} in ${routes.join(', ')}`);
  }
  const body = doc.paths['/v1/dumps']!['post']!.requestBody!.content['application/json']!.schema;
  assert.equal(body.additionalProperties, false);
  assert.equal(body.properties.pid.maximum, readPidMax() - 1);
});

test('schema errors are 400 problem+json naming the offending field', async () => {
  const cases: Array<[unknown, string, RegExp]> = [
    [{ pid: -1 }, '/pid', />= 1/],
    [{ pid: 0 }, '/pid', />= 1/],
    [{ pid: 2 ** 40 }, '/pid', /<=/],
    [{ pid: readPidMax() }, '/pid', /<=/],
    [{ pid: 1.5 }, '/pid', /integer/],
    [{ pid: '123' }, '/pid', /integer/],
    [{}, '/pid', /required/],
    [{ pid: 1, extra: true }, '/extra', /unknown property/],
    [{ pid: 1, name: '../etc' }, '/name', /pattern/],
    [{ pid: 1, leaveRunning: 'yes' }, '/leaveRunning', /boolean/],
  ];
  for (const [body, field, message] of cases) {
    const p = problem(await api.send('POST', '/v1/dumps', body), 400, 'INVALID_REQUEST');
    const err = p.errors?.find((e) => e.field === field);
    assert.ok(err, `${JSON.stringify(body)}: ${field} named in ${JSON.stringify(p.errors)}`);
    assert.equal(err.in, 'body');
    assert.match(err.message, message);
  }
  problem(
    await api.send('POST', '/v1/dumps', '{"pid":', { 'content-type': 'application/json' }),
    400,
    'INVALID_REQUEST',
  );
  problem(
    await api.send('POST', '/v1/dumps', 'pid=1', { 'content-type': 'text/plain' }),
    415,
    'UNSUPPORTED_MEDIA_TYPE',
  );
  problem(await api.send('POST', '/v1/dumps', 'x'.repeat(100_000)), 413, 'PAYLOAD_TOO_LARGE');
});

test('image names are checked by the store rule: traversal is 400, an unknown image 404', async () => {
  for (const path of ['/v1/images/..%2Fetc', '/v1/images/.hidden', '/v1/images/a%2Fb', '/v1/images/%2E%2E']) {
    for (const method of ['GET', 'DELETE']) {
      const p = problem(await api.send(method, path), 400, 'INVALID_REQUEST');
      assert.equal(p.errors?.[0]?.field, '/name', `${method} ${path}`);
      assert.equal(p.errors?.[0]?.in, 'params');
    }
  }
  problem(await api.send('GET', '/v1/images/no-such-image'), 404, 'IMAGE_NOT_FOUND');
  problem(await api.send('DELETE', '/v1/images/no-such-image'), 404, 'IMAGE_NOT_FOUND');
  await assert.rejects(api.inspectImage('no-such-image'), (e: unknown) => {
    assert.ok(e instanceof DaemonApiError);
    assert.equal(e.code, 'IMAGE_NOT_FOUND');
    assert.equal(e.status, 404);
    return true;
  });
});

test('unknown routes, jobs and pids are 404 problem+json', async () => {
  problem(await api.send('GET', '/v2/images'), 404, 'ROUTE_NOT_FOUND');
  problem(await api.send('PUT', '/v1/images'), 404, 'ROUTE_NOT_FOUND');
  problem(await api.send('GET', '/v1/jobs/00000000-0000-4000-8000-000000000000'), 404, 'JOB_NOT_FOUND');
  problem(await api.send('GET', '/v1/jobs/not-a-job'), 400, 'INVALID_REQUEST');
  problem(await api.send('GET', '/v1/jobs?state=sleeping'), 400, 'INVALID_REQUEST');
  const free = readPidMax() - 1;
  if (existsSync(`/proc/${free}`)) return;
  const p = problem(await api.send('POST', '/v1/dumps', { pid: free }), 404, 'NO_SUCH_PROCESS');
  assert.match(p.instance ?? '', /^\/v1\/jobs\//);
});

test('POST /v1/dumps makes an image that images list, inspect and delete', { skip: noDump }, async () => {
  const before = await metrics();
  const ok = before.get('lazyrestore_dumps_total{outcome="succeeded"}')!;
  const failed = before.get('lazyrestore_dumps_total{outcome="failed"}')!;
  const prog = new Program('dump_counter');
  try {
    const pid = await started(prog);
    const a = await api.send('POST', '/v1/dumps', { pid, name: 'api-counter', leaveRunning: true });
    assert.equal(a.status, 201, a.body);
    assert.equal(a.headers.location, '/v1/images/api-counter');
    const dumped = json<Awaited<ReturnType<DaemonClient['dump']>>>(a);
    assert.equal(dumped.name, 'api-counter');
    assert.equal(dumped.rootPid, pid);
    assert.equal(dumped.leftRunning, true);
    assert.ok(dumped.summary.pages >= 64, `the 64 pattern pages are in the image (${dumped.summary.pages})`);
    assert.match(dumped.job, UUID_RE);
    // Left running: it still counts.
    assert.match(await ask(prog, 'count', 'COUNT'), /^COUNT \d+$/);

    const job = await api.job(dumped.job);
    assert.equal(job.kind, 'dump');
    assert.equal(job.state, 'succeeded');
    assert.deepEqual(job.params, { pid, name: 'api-counter', leaveRunning: true });
    assert.equal(job.result?.['name'], 'api-counter');
    assert.ok(job.finishedAt !== null && job.error === null);
    assert.ok((await api.jobs()).some((j) => j.id === dumped.job));

    const listed = await api.listImages();
    assert.deepEqual(
      listed.map((s) => s.name),
      ['api-counter'],
    );
    assert.equal(listed[0]!.id, dumped.id);

    const detail = await api.inspectImage('api-counter');
    assert.equal(detail.summary.pages, dumped.summary.pages);
    const tree = detail.meta['tree'] as { processes: Array<{ pid: number }> };
    assert.equal(tree.processes[0]?.pid, pid);
    assert.equal((detail.meta[`process/${pid}`] as { comm: string }).comm, 'dump_counter');

    problem(await api.send('POST', '/v1/dumps', { pid, name: 'api-counter', leaveRunning: true }), 409, 'IMAGE_EXISTS');
    assert.match(await ask(prog, 'count', 'COUNT'), /^COUNT \d+$/, 'a refused dump leaves the process running');

    const after = await metrics();
    assert.equal(after.get('lazyrestore_images'), 1);
    assert.equal(after.get('lazyrestore_dumps_total{outcome="succeeded"}'), ok + 1);
    assert.equal(after.get('lazyrestore_dumps_total{outcome="failed"}'), failed + 1);
    assert.equal(after.get('lazyrestore_dump_duration_seconds_count'), ok + failed + 2);
    assert.equal(after.get('lazyrestore_dump_frozen_seconds_count'), ok + 1);

    const removed = await api.removeImage('api-counter');
    assert.equal(removed.id, dumped.id);
    assert.ok(removed.freedChunks > 0);
    problem(await api.send('GET', '/v1/images/api-counter'), 404, 'IMAGE_NOT_FOUND');
    assert.deepEqual(await api.listImages(), []);
  } finally {
    await stop(prog);
  }
});

test('a dump without leaveRunning takes a default name and kills the tree', { skip: noDump }, async () => {
  const prog = new Program('dump_counter');
  try {
    const pid = await started(prog);
    const dumped = await api.dump({ pid });
    assert.match(dumped.name, new RegExp(`^dump_counter-${pid}-\\d{8}T\\d{6}$`));
    assert.equal(dumped.leftRunning, false);
    assert.equal((await prog.exit()).signal, 'SIGKILL');
    await api.removeImage(dumped.name);
  } finally {
    await stop(prog);
  }
});

test('a refused dump is 422 problem+json with every refusal, and its job failed', { skip: noDump }, async () => {
  const prog = new Program('dump_counter', ['socket']);
  try {
    const pid = await started(prog);
    const p = problem(await api.send('POST', '/v1/dumps', { pid, leaveRunning: true }), 422, 'UNSUPPORTED_FD');
    assert.equal(p.pid, pid);
    assert.ok(p.problems?.some((r) => r.code === 'UNSUPPORTED_FD' && r.pid === pid));
    const id = /^\/v1\/jobs\/(.+)$/.exec(p.instance ?? '')?.[1];
    assert.ok(id, `instance names the job: ${p.instance}`);
    const job = await api.job(id);
    assert.equal(job.state, 'failed');
    assert.equal(job.error?.code, 'UNSUPPORTED_FD');
    assert.equal(job.error?.status, 422);
    assert.deepEqual(
      (await api.jobs()).filter((j) => j.id === id).map((j) => j.state),
      ['failed'],
    );
    assert.match(await ask(prog, 'count', 'COUNT'), /^COUNT \d+$/, 'the refused process still runs');
    assert.deepEqual(await api.listImages(), []);
  } finally {
    await stop(prog);
  }
});

test('GET /v1/tasks and /metrics show a task the page service serves on a real uffd', async (t) => {
  try {
    if ((native.uffdProbe().features & EVENT_FEATURES) !== EVENT_FEATURES) return t.skip('uffd events missing');
  } catch (e) {
    return t.skip(`userfaultfd unavailable: ${(e as Error).message}`);
  }
  const target = await startTarget(1);
  let task: number | undefined;
  let owned = false;
  try {
    negotiate(target);
    const seed = randomSeed();
    const source = new PageSource();
    source.provide(target.addr, patternPages(seed, target.addr, target.len));
    task = daemon.pageService.addTask(target.uffd, source);
    owned = true;
    daemon.pageService.addLazyRange(task, target.addr, target.len, target.addr);
    const pages = target.len / PAGE;

    assert.equal(await ask(target.prog, `check ${seed} 0 ${2 * PAGE}`), 'OK');
    assert.equal(await ask(target.prog, `munmap ${(pages / 2) * PAGE} ${PAGE}`), 'OK');
    // Statistics lag the kernel by one service-loop iteration.
    let mine;
    for (let i = 0; i < 1000; i++) {
      mine = (await api.tasks()).find((s) => s.task === task);
      if (mine !== undefined && mine.faults === 2 && mine.events.unmap === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(mine, 'the task is listed');
    assert.equal(mine.parent, null);
    assert.equal(mine.faults, 2);
    assert.equal(mine.pagesCopied, 2);
    assert.equal(mine.events.unmap, 1);
    assert.equal(mine.lazyPages, pages - 3);

    const metrics = (await api.send('GET', '/metrics')).body;
    assert.match(metrics, /^lazyrestore_tasks 1$/m);
    assert.match(metrics, new RegExp(`^lazyrestore_task_page_faults_total\\{task="${task}"\\} 2$`, 'm'));
    assert.match(metrics, new RegExp(`^lazyrestore_task_copied_bytes_total\\{task="${task}"\\} ${2 * PAGE}$`, 'm'));
    assert.match(metrics, new RegExp(`^lazyrestore_task_lazy_pages\\{task="${task}"\\} ${pages - 3}$`, 'm'));
    assert.match(metrics, /^lazyrestore_page_service_events_total\{kind="unmap"\} 1$/m);

    // The task's process exits: the service lets the task go, and /v1/tasks no longer lists it.
    target.prog.kill();
    await target.prog.exit();
    for (let i = 0; i < 1000 && (await api.tasks()).some((s) => s.task === task); i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.deepEqual(await api.tasks(), []);
    task = undefined;
    assert.match((await api.send('GET', '/metrics')).body, /^lazyrestore_page_service_events_total\{kind="exit"\} 1$/m);
  } finally {
    target.prog.kill();
    // Once added, the service owns the uffd: releasing the task closes it (an exited task is gone already).
    if (!owned) native.closeFd(target.uffd);
    else if (task !== undefined) daemon.pageService.releaseTask(task);
  }
});

test('a second daemon refuses a live socket (EADDRINUSE) and a store in use (STORE_LOCKED)', async () => {
  await assert.rejects(
    startDaemon({ socketPath: daemon.socketPath, dataDir: join(dir, 'data2'), logLevel: 'silent' }),
    (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE',
  );
  const other = join(dir, 'other.sock');
  await assert.rejects(
    startDaemon({ socketPath: other, dataDir: daemon.dataDir, logLevel: 'silent' }),
    (e: NodeJS.ErrnoException) => e.code === 'STORE_LOCKED',
  );
  assert.equal(existsSync(other), false);
  assert.equal((await api.health()).status, 'ok', 'the first daemon still serves');
});

test('a stale socket left by a dead daemon is replaced', async () => {
  const path = join(dir, 'stale.sock');
  // A socket nobody listens on: bound by a process that is gone.
  const r = spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  assert.equal(r.signal, 'SIGKILL');
  assert.ok(statSync(path).isSocket());
  const d = await startDaemon({ socketPath: path, dataDir: join(dir, 'data-stale'), logLevel: 'silent' });
  try {
    assert.equal((await new DaemonClient({ socketPath: path }).health()).status, 'ok');
  } finally {
    await d.close();
  }
  assert.equal(existsSync(path), false, 'close removes the socket');
  await assert.rejects(new DaemonClient({ socketPath: path }).health(), DaemonUnreachableError);
});

test('TCP needs a token: refused at startup without one, 401 with a wrong one, 200 with the right one', async () => {
  const socketPath = join(dir, 'tcp.sock');
  const dataDir = join(dir, 'data-tcp');
  await assert.rejects(startDaemon({ socketPath, dataDir, listen: '127.0.0.1:0', logLevel: 'silent' }), (e: Error) => {
    assert.equal((e as { code?: string }).code, 'INVALID_ARGUMENT');
    assert.match(e.message, /--token-file/);
    return true;
  });
  assert.equal(existsSync(socketPath), false);

  const tokenFile = join(dir, 'token');
  const token = 'a'.repeat(8) + Math.random().toString(36).slice(2) + 'b'.repeat(8);
  writeFileSync(tokenFile, token + '\n', { mode: 0o644 });
  chmodSync(tokenFile, 0o644);
  await assert.rejects(
    startDaemon({ socketPath, dataDir, listen: '127.0.0.1:0', tokenFile, logLevel: 'silent' }),
    /accessible to group or others/,
  );
  chmodSync(tokenFile, 0o600);
  const d = await startDaemon({ socketPath, dataDir, listen: '127.0.0.1:0', tokenFile, logLevel: 'silent' });
  try {
    assert.ok(d.tcp !== null && d.tcp.port > 0);
    assert.equal(d.tcp.host, '127.0.0.1');
    const { host, port } = d.tcp;
    const noAuth = await new DaemonClient({ host, port }).send('GET', '/v1/images');
    problem(noAuth, 401, 'UNAUTHORIZED');
    assert.match(String(noAuth.headers['www-authenticate']), /^Bearer/);
    problem(await new DaemonClient({ host, port, token: token + 'x' }).send('GET', '/v1/images'), 401, 'UNAUTHORIZED');
    problem(await new DaemonClient({ host, port, token: 'short' }).send('GET', '/nowhere'), 401, 'UNAUTHORIZED');
    const good = new DaemonClient({ host, port, token });
    assert.deepEqual(await good.listImages(), []);
    assert.equal((await good.health()).status, 'ok');
    problem(await good.send('GET', '/nowhere'), 404, 'ROUTE_NOT_FOUND');
    // The unix socket of the same daemon needs no token.
    assert.deepEqual(await new DaemonClient({ socketPath }).listImages(), []);
  } finally {
    await d.close();
  }
});

test('a stopped page service: readyz is 503 NOT_READY, an unexpected failure 500 without details', async () => {
  const store = await ImageStore.open(join(dir, 'data-degraded'));
  const pageService = new PageService();
  await pageService.close();
  const state = { closing: false };
  const jobs = new JobRegistry();
  const app = await buildApi({
    store,
    pageService,
    jobs,
    restores: new RestoreRegistry(store, pageService, jobs),
    metrics: new DaemonMetrics(),
    pidMax: readPidMax(),
    startedAt: Date.now(),
    readiness: () => ({ store: true, pageService: !pageService.closed, closing: state.closing }),
  });
  try {
    const socketPath = join(dir, 'degraded.sock');
    await listenUnix(app, { path: socketPath });
    const c = new DaemonClient({ socketPath });
    assert.equal((await c.health()).status, 'ok');
    const p = problem(await c.send('GET', '/readyz'), 503, 'NOT_READY');
    assert.match(p.detail, /page service/);
    // PageService.stats() throws a plain Error on a closed service: not ours to show.
    const a = await c.send('GET', '/v1/tasks');
    const internal = problem(a, 500, 'INTERNAL_ERROR');
    assert.doesNotMatch(a.body, /PageService is closed|page-service\.js/);
    assert.match(internal.detail, /request req-\w+/);
    state.closing = true;
    problem(await c.send('GET', '/v1/images'), 503, 'SHUTTING_DOWN');
  } finally {
    await app.close();
    await store.close();
  }
});
