import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { ApiClient } from './api';
import { freePort, OwnRedis } from './redis-server';
import { createDatabase } from './test-app';

const ROOT = join(__dirname, '..', '..');
const MAIN = join(ROOT, 'dist', 'main.js');

/**
 * The built service as real processes (`node dist/main.js`), for tests that kill, stop and split
 * it: one deployment is one database, one Redis server of its own and one queue prefix, shared
 * by every process started from it.
 */
export class Deployment {
  readonly adminToken = `admin-${randomBytes(16).toString('hex')}`;
  private readonly processes: ServiceProcess[] = [];

  private constructor(
    readonly redis: OwnRedis,
    private readonly database: { url: string; drop(): Promise<void> },
    readonly env: Record<string, string>,
  ) {}

  /** `postgres` needs TEST_DATABASE_URL; the default is a SQLite file of its own. */
  static async create(env: Record<string, string> = {}): Promise<Deployment> {
    assertBuilt();
    const id = randomBytes(5).toString('hex');
    const redis = await OwnRedis.start();
    const database = await createDatabase(id);
    return new Deployment(redis, database, {
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      QUEUE_PREFIX: `provisor-proc-${id}`,
      LOG_LEVEL: 'warn',
      JOB_ATTEMPTS: '3',
      JOB_BACKOFF_MS: '50',
      JOB_LOCK_MS: '2000',
      RELAY_INTERVAL_MS: '200',
      ...env,
    });
  }

  /** Starts one process and waits until it answers on its port. */
  async start(env: Record<string, string> = {}, name = 'provisor'): Promise<ServiceProcess> {
    const port = await freePort();
    const service = new ServiceProcess(name, port, {
      ...this.env,
      ADMIN_TOKEN: this.adminToken,
      PORT: String(port),
      HOST: '127.0.0.1',
      ...env,
    });
    this.processes.push(service);
    await service.ready();
    return service;
  }

  async close(): Promise<void> {
    await Promise.all(this.processes.map((p) => p.kill()));
    // The Redis server is the deployment's own: stopping it leaves nothing behind.
    await this.redis.stop();
    await this.database.drop();
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** From the signal that asked for the exit to the exit. */
  ms: number;
}

export class ServiceProcess {
  readonly url: string;
  private readonly child: ChildProcess;
  private readonly exit: Promise<Exit>;
  private readonly lines: string[] = [];
  private signalledAt = 0;

  constructor(
    readonly name: string,
    readonly port: number,
    env: Record<string, string>,
  ) {
    this.url = `http://127.0.0.1:${port}`;
    this.child = spawn(process.execPath, [MAIN], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', TZ: 'UTC', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      this.lines.push(...chunk.toString().split('\n').filter(Boolean));
      if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 200);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.exit = new Promise((resolve) =>
      this.child.once('exit', (code, signal) =>
        resolve({ code, signal, ms: Date.now() - this.signalledAt }),
      ),
    );
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines it wrote, for a failing test's message. */
  get logTail(): string {
    return this.lines.slice(-40).join('\n');
  }

  /** A client speaking as `token` to this process. */
  client(token: string): ApiClient {
    return new ApiClient(request(this.url), token);
  }

  /** Waits until the HTTP port answers /api/health (200, or 503 while Redis is away). */
  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(`${this.name} exited while starting:\n${this.logTail}`);
      }
      try {
        const res = await request(this.url).get('/api/health');
        if (res.status === 200 || res.status === 503) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${this.name} did not answer in ${timeoutMs} ms:\n${this.logTail}`);
  }

  /** `kill -9`: no hook runs, nothing is flushed. */
  async kill(): Promise<Exit> {
    if (!this.running) return this.exit;
    this.signalledAt = Date.now();
    this.child.kill('SIGKILL');
    return this.exit;
  }

  /** `SIGTERM`, as a container runtime stops a container; resolves when the process is gone. */
  async terminate(): Promise<Exit> {
    if (!this.running) return this.exit;
    this.signalledAt = Date.now();
    this.child.kill('SIGTERM');
    return this.exit;
  }
}

/** The tests run what `npm run build` made: refuse a dist older than the sources. */
function assertBuilt(): void {
  const built = mtime(MAIN);
  const newest = newestIn(join(ROOT, 'src'));
  if (built === 0 || newest > built) {
    throw new Error('dist/ is missing or older than src/: run `npm run build` first');
  }
}

function newestIn(dir: string): number {
  return readdirSync(dir, { withFileTypes: true }).reduce((newest, entry) => {
    const path = join(dir, entry.name);
    return Math.max(
      newest,
      entry.isDirectory() ? newestIn(path) : entry.name.endsWith('.spec.ts') ? 0 : mtime(path),
    );
  }, 0);
}

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}
