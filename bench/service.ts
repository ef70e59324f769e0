import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { BenchError } from './client';
import { PROJECT_ROOT } from './options';
import { cpuMsPer, round } from './stats';

const SAMPLE_EVERY_MS = 200;

export interface LogLine {
  level: number;
  msg: string;
}

interface CpuReading {
  all: number | null;
  main: number | null;
  at: number;
}

/** The service's CPU over one load run (see `ServiceProcess.meter`); null where /proc cannot tell. */
export interface LoadCpu {
  /** Every thread's CPU, per request. */
  msPerRequest: number | null;
  /** The main thread's CPU, per request. */
  mainThreadMsPerRequest: number | null;
  /**
   * The main thread's CPU over the run's wall time, in % of one core. Near 100 the thread is what
   * bounds the rate: every request waits for its turn on it.
   */
  mainThreadBusyPercent: number | null;
}

export interface CpuMeter {
  start(): void;
  /** The first call counts. */
  end(): void;
  use(requests: number): LoadCpu;
}

export interface ServiceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stopSeconds: number;
}

/** A port nobody listens on now; the service binds it a moment later. */
export function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolvePromise(address.port);
        else reject(new Error('No port'));
      });
    });
  });
}

/**
 * The `node` options of `npm start` (`node <options> dist/main.js`), which the Dockerfile's
 * command repeats: the bench runs the service as operators do.
 */
export function startCommandNodeArgs(): string[] {
  const pkg = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  const match = /^node((?:\s+--\S+)*)\s+dist\/main\.js$/.exec(pkg.scripts.start ?? '');
  if (!match) throw new Error(`package.json's start script is not "node [options] dist/main.js"`);
  return match[1].trim().split(/\s+/).filter(Boolean);
}

/**
 * The built service as a child process, as operators run it: `npm start`'s command, configured by
 * environment alone. It runs in a scratch directory so a developer's `.env` cannot change what
 * is measured. Its resident memory and CPU time are sampled from /proc while it runs.
 */
export class ServiceProcess {
  readonly baseUrl: string;
  /** Warnings and errors the service logged (pino levels 40 and up), first ones only. */
  readonly notable: LogLine[] = [];
  errorLines = 0;
  warnLines = 0;
  peakRssKb = 0;
  rssSamples = 0;
  private readonly phasePeaks = new Map<string, number>();
  private phase = 'start';
  private readonly child: ChildProcess;
  private readonly log: WriteStream;
  private readonly sampler: NodeJS.Timeout;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly exited: Promise<void>;
  private stopping = false;
  private stopped?: Promise<ServiceExit>;
  private readonly ticksPerSecond = clockTicks();

  constructor(
    mainJs: string,
    readonly workDir: string,
    readonly port: number,
    env: Record<string, string>,
    nodeArgs: readonly string[] = [],
  ) {
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.log = createWriteStream(join(workDir, 'service.log'));
    this.child = spawn(process.execPath, [...startCommandNodeArgs(), ...nodeArgs, mainJs], {
      cwd: workDir,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let partial = '';
    const onOutput = (chunk: Buffer) => {
      this.log.write(chunk);
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) this.scan(line);
    };
    this.child.stdout?.on('data', onOutput);
    this.child.stderr?.on('data', onOutput);
    this.exited = new Promise((resolvePromise) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolvePromise();
      });
    });
    this.sampler = setInterval(() => this.sample(), SAMPLE_EVERY_MS);
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Set when the service ended without being asked to. */
  get crash(): Error | null {
    if (!this.exitInfo || this.stopping) return null;
    return new BenchError(
      `The service exited (code ${this.exitInfo.code}, signal ${this.exitInfo.signal}); ` +
        `last lines of its log:\n${this.logTail(30)}`,
    );
  }

  async waitHealthy(timeoutMs = 60_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if (this.crash) throw this.crash;
      try {
        const res = await fetch(`${this.baseUrl}/api/health`);
        await res.arrayBuffer();
        if (res.status === 200) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new BenchError(
      `The service was not healthy within ${timeoutMs} ms:\n${this.logTail(30)}`,
    );
  }

  /** Names the phase that later samples belong to, for the per-phase memory peaks. */
  enterPhase(name: string): void {
    this.sample();
    this.phase = name;
  }

  peaksByPhase(): Record<string, number> {
    return Object.fromEntries(
      [...this.phasePeaks].map(([phase, kb]) => [phase, Math.round(kb / 102.4) / 10]),
    );
  }

  /** The kernel's own high-water mark of resident memory, which no sampling gap can miss. */
  highWaterMarkKb(): number | null {
    return readStatus(this.pid, 'VmHWM');
  }

  /** Service CPU time so far (user + system, every thread), in seconds. */
  cpuSeconds(): number | null {
    return this.statCpuSeconds(`/proc/${this.pid}/stat`);
  }

  /**
   * CPU time so far of the service's main thread alone, in seconds: the one thread that parses
   * requests, runs their handlers and the jobs. V8's garbage-collection helper, libuv's pool and
   * (SQLite) the checkpointer's thread run beside it on the other cores; what this thread cannot
   * keep up with bounds the service.
   */
  mainThreadCpuSeconds(): number | null {
    return this.statCpuSeconds(`/proc/${this.pid}/task/${this.pid}/stat`);
  }

  /**
   * A meter of the service's CPU over one load run: `start` as its first request goes, `end` at
   * its last answer, then `use(requests)`.
   */
  meter(): CpuMeter {
    let start: CpuReading | null = null;
    let end: CpuReading | null = null;
    const read = (): CpuReading => ({
      all: this.cpuSeconds(),
      main: this.mainThreadCpuSeconds(),
      at: performance.now(),
    });
    return {
      start: () => void (start = read()),
      end: () => void (end ??= read()),
      use: (requests) => {
        if (!start || !end)
          return { msPerRequest: null, mainThreadMsPerRequest: null, mainThreadBusyPercent: null };
        const seconds = (end.at - start.at) / 1000;
        const main = start.main === null || end.main === null ? null : end.main - start.main;
        return {
          msPerRequest: cpuMsPer(start.all, end.all, requests),
          mainThreadMsPerRequest: cpuMsPer(start.main, end.main, requests),
          mainThreadBusyPercent:
            main === null || seconds <= 0 ? null : round((main / seconds) * 100, 0),
        };
      },
    };
  }

  private statCpuSeconds(path: string): number | null {
    try {
      const stat = readFileSync(path, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / this.ticksPerSecond;
    } catch {
      return null;
    }
  }

  logTail(lines: number): string {
    try {
      return readFileSync(join(this.workDir, 'service.log'), 'utf8')
        .trimEnd()
        .split('\n')
        .slice(-lines)
        .join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGTERM, as an orchestrator stops it; a clean exit is code 0 within the shutdown grace. */
  stop(timeoutMs = 30_000): Promise<ServiceExit> {
    this.stopped ??= this.terminate(timeoutMs);
    return this.stopped;
  }

  private async terminate(timeoutMs: number): Promise<ServiceExit> {
    this.sample();
    this.stopping = true;
    const started = performance.now();
    if (!this.exitInfo) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    clearInterval(this.sampler);
    await new Promise<void>((r) => this.log.end(r));
    return {
      code: this.exitInfo?.code ?? null,
      signal: this.exitInfo?.signal ?? null,
      stopSeconds: Math.round(performance.now() - started) / 1000,
    };
  }

  private sample(): void {
    if (this.exitInfo) return;
    const rss = readStatus(this.pid, 'VmRSS') ?? psRssKb(this.pid);
    if (rss === null) return;
    this.rssSamples++;
    this.peakRssKb = Math.max(this.peakRssKb, rss);
    this.phasePeaks.set(this.phase, Math.max(this.phasePeaks.get(this.phase) ?? 0, rss));
  }

  private scan(line: string): void {
    if (!line.startsWith('{')) {
      if (line.trim()) this.note({ level: 50, msg: line });
      return;
    }
    try {
      const entry = JSON.parse(line) as {
        level?: number;
        msg?: string;
        req?: { method?: string; url?: string };
        res?: { statusCode?: number };
      };
      if ((entry.level ?? 0) < 40) return;
      // A request line says little without what was asked and answered.
      const request = entry.req
        ? ` ${entry.req.method} ${entry.req.url} -> ${entry.res?.statusCode}`
        : '';
      this.note({ level: entry.level ?? 40, msg: `${entry.msg ?? line}${request}` });
    } catch {
      this.note({ level: 50, msg: line });
    }
  }

  private note(line: LogLine): void {
    // What the service says while it shuts down is its own business, not the bench's.
    if (this.stopping) return;
    if (line.level >= 50) this.errorLines++;
    else this.warnLines++;
    if (this.notable.length < 20) this.notable.push(line);
  }
}

function readStatus(pid: number, field: string): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Where there is no /proc (macOS), `ps` knows the resident size too. */
function psRssKb(pid: number): number | null {
  try {
    const out = execFileSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' });
    const kb = Number(out.trim());
    return Number.isFinite(kb) && kb > 0 ? kb : null;
  } catch {
    return null;
  }
}

function clockTicks(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}
