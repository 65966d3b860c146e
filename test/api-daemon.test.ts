/**
 * `lazyrestore daemon` as its own process (dist/cli/main.js): refusing TCP without a token, JSON logs, a
 * socket shared with a group (0660) that a member of that group can use, and graceful shutdown on SIGTERM
 * while a dump is in flight (the dump answers 201 and is committed, the store is closed, the socket removed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ImageStore } from '../daemon/store/index.js';
import { DaemonClient } from '../cli/client.js';
import { Program, repoRoot } from './support/programs.js';

const cli = join(repoRoot, 'dist', 'cli', 'main.js');
const NOBODY = 65534;

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lr-apid-'));
  chmodSync(dir, 0o755);
  return dir;
}

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A daemon process whose stdout is parsed as JSON log lines. */
class DaemonProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly log: LogLine[] = [];
  readonly nonJson: string[] = [];
  stderr = '';
  #waiters: Array<() => void> = [];

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [cli, 'daemon', ...args], { stdio: 'pipe' });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      try {
        this.log.push(JSON.parse(line) as LogLine);
      } catch {
        this.nonJson.push(line);
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.on('exit', () => {
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  async waitForLog(msg: string, timeoutMs = 30_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.log.find((l) => l.msg === msg);
      if (found) return found;
      if (this.child.exitCode !== null) throw new Error(`daemon exited (${this.child.exitCode}): ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for log "${msg}": ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async exit(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) await once(this.child, 'exit');
    return this.child.exitCode;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

test('the daemon refuses to start a TCP listener without a token file', () => {
  const dir = tempDir();
  try {
    const socket = join(dir, 'api.sock');
    const r = spawnSync(
      process.execPath,
      [cli, 'daemon', '--socket', socket, '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0'],
      { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^lazyrestore: --listen needs --token-file.* \(INVALID_ARGUMENT\)$/m);
    assert.equal(existsSync(socket), false, 'nothing was started');
    assert.equal(existsSync(join(dir, 'data')), false, 'the store was not even opened');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs an HTTP GET over the unix socket as nobody (uid and gid 65534, no other groups); returns its output. */
function getAsNobody(socket: string, path: string): string {
  const script =
    "require('http').get({ socketPath: process.argv[1], path: process.argv[2], agent: false }, (r) => {" +
    '  console.log(r.statusCode); process.exit(0); })' +
    ".on('error', (e) => console.log(e.code));";
  const r = spawnSync(
    '/usr/bin/setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', script, socket, path],
    { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

async function waitForRunningDump(api: DaemonClient): Promise<string> {
  for (;;) {
    const dumps = (await api.jobs()).filter((j) => j.kind === 'dump');
    const job = dumps[0];
    if (job?.state === 'running') return job.id;
    if (job !== undefined) throw new Error(`the dump finished before it was seen running: ${JSON.stringify(job)}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

test('SIGTERM lets an in-flight dump finish, closes the store and removes the 0660 group socket', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('the daemon dumps other processes: needs root');
  const dir = tempDir();
  const socket = join(dir, 'run', 'api.sock');
  const dataDir = join(dir, 'data');
  const daemon = new DaemonProcess(['--socket', socket, '--data-dir', dataDir, '--group', String(NOBODY)]);
  const prog = new Program('dump_big', ['256']);
  try {
    const ready = await daemon.waitForLog('lazyrestore daemon ready');
    assert.equal(ready['socket'], socket);
    assert.equal(ready.level, 30);
    const st = statSync(socket);
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(st.gid, NOBODY);
    if (existsSync('/usr/bin/setpriv')) assert.equal(getAsNobody(socket, '/healthz'), '200', 'the group may connect');

    const pid = Number(/pid=(\d+)/.exec(await prog.waitFor('READY', 60_000))?.[1]);
    const api = new DaemonClient({ socketPath: socket });
    const answer = api.send('POST', '/v1/dumps', { pid, name: 'in-flight' });
    const job = await waitForRunningDump(api);
    daemon.child.kill('SIGTERM');

    const a = await answer;
    assert.equal(a.status, 201, a.body);
    assert.equal((JSON.parse(a.body) as { job: string }).job, job);
    assert.equal(await daemon.exit(), 0, daemon.stderr);
    assert.equal(existsSync(socket), false, 'the socket is removed');
    assert.deepEqual(daemon.nonJson, [], 'stdout holds JSON log lines only');
    const messages = daemon.log.map((l) => l.msg);
    for (const m of ['signal received', 'shutting down', 'lazyrestore daemon stopped'])
      assert.ok(messages.includes(m), m);
    assert.ok(messages.indexOf('dump committed') < messages.indexOf('lazyrestore daemon stopped'));

    // The store was closed (LevelDB's lock is free) with the dump committed.
    const store = await ImageStore.open(dataDir);
    try {
      assert.equal((await store.inspect('in-flight')).info['rootPid'], pid);
    } finally {
      await store.close();
    }
  } finally {
    prog.kill();
    daemon.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
