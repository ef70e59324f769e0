import Bull from 'bull';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { Cleanup, deleteRedisKeys } from './cleanup';
import { ApiClient, assertClean, BenchError, type LoadResult } from './client';
import {
  COMMITS_PER_OPERATION,
  PostgresBenchDatabase,
  SqliteBenchDatabase,
  type BenchDatabase,
} from './database';
import { EventWatcher } from './event-stream';
import { runFloor, runHttpStack } from './floor';
import { growthStep, type AcceptRound } from './growth';
import { Lifecycle } from './lifecycle';
import { parseOptions, PROJECT_ROOT, usage, UsageError, type BenchOptions } from './options';
import { evaluateTargets, growthRatios, renderReport, type BenchResults } from './report';
import { QueueName } from '../src/queues/queues';
import { freePort, ServiceProcess, startCommandNodeArgs } from './service';
import { ratio, round } from './stats';

const ADMIN_TOKEN = 'provisor-bench-admin-token';
const MAIN_JS = join(PROJECT_ROOT, 'dist/main.js');
const WARMUP_INSTANCES = 1000;
/** Kept from the scratch directory, to be written beside the results of a failed run. */
let serviceLog = '';

function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

function gitState(): { commit: string | null; dirty: boolean | null } {
  const git = (...args: string[]) =>
    execFileSync('git', args, {
      cwd: PROJECT_ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  try {
    return {
      commit: git('rev-parse', 'HEAD').trim(),
      dirty: git('status', '--porcelain').trim() !== '',
    };
  } catch {
    return { commit: null, dirty: null };
  }
}

function emptyResults(options: BenchOptions): BenchResults {
  return {
    meta: {
      ...gitState(),
      date: new Date().toISOString(),
      durationSeconds: 0,
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
        memoryMb: Math.round(totalmem() / 2 ** 20),
        platform: process.platform,
        release: release(),
        loadAverageAtStart: loadavg().map((v) => round(v, 2)),
        loadAverageAtEnd: [],
      },
      node: process.version,
      database: options.postgresUrl ? 'postgres' : 'sqlite',
      databaseVersion: null,
      n: options.n,
      concurrency: options.concurrency,
      workerConcurrency: options.workerConcurrency,
      acceptRequests: options.acceptRequests,
      acceptRounds: options.acceptRounds,
      growthSizes: options.growth,
      overheadActions: options.overheadActions,
      simLatencyMs: 0,
      commitsPerOperation: COMMITS_PER_OPERATION,
      startNodeArgs: startCommandNodeArgs(),
      serviceNodeArgs: options.nodeArgs,
      fullSize: options.fullSize,
    },
    accept: null,
    endToEnd: [],
    writeGroups: null,
    overhead: null,
    floor: { noop: null, commits: null },
    httpStack: null,
    floorRatios: {},
    growth: [],
    growthRatios: null,
    memory: { peakRssMb: 0, highWaterMarkMb: null, samples: 0, peakByPhaseMb: {} },
    service: { warnLines: 0, errorLines: 0, notable: [], exit: null },
    targets: [],
    errors: [],
  };
}

async function run(options: BenchOptions, results: BenchResults, cleanup: Cleanup): Promise<void> {
  if (!existsSync(MAIN_JS)) {
    throw new BenchError(`${relative(PROJECT_ROOT, MAIN_JS)} is missing: run npm run build first`);
  }
  const tag = randomBytes(4).toString('hex');
  const prefix = `provisor-bench-${tag}`;
  const floorPrefix = `provisor-bench-floor-${tag}`;

  let database: BenchDatabase;
  if (options.postgresUrl) {
    database = await PostgresBenchDatabase.create(options.postgresUrl);
  } else {
    database = new SqliteBenchDatabase();
  }
  cleanup.add('database', () => database.destroy());
  log(`Database: ${database.label}`);
  cleanup.add('Redis keys', async () => {
    await deleteRedisKeys(options.redisUrl, prefix);
    await deleteRedisKeys(options.redisUrl, floorPrefix);
  });
  const workDir = mkdtempSync(join(tmpdir(), 'provisor-bench-service-'));
  cleanup.add('scratch directory', async () => rmSync(workDir, { recursive: true, force: true }));

  cleanup.add('service log', async () => {
    serviceLog = readFileSync(join(workDir, 'service.log'), 'utf8');
  });

  const port = await freePort();
  const service = new ServiceProcess(
    MAIN_JS,
    workDir,
    port,
    {
      PORT: String(port),
      HOST: '127.0.0.1',
      APP_ROLE: 'all',
      DATABASE_URL: database.serviceUrl,
      REDIS_URL: options.redisUrl,
      QUEUE_PREFIX: prefix,
      ADMIN_TOKEN,
      SIM_LATENCY_MS: '0',
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      WORKER_CONCURRENCY: String(options.workerConcurrency),
      // One bench client sends far more than any user may; the limiter still runs, never trips.
      RATE_LIMIT_PER_MINUTE: '1000000000',
    },
    options.nodeArgs,
  );
  cleanup.add('service', () => service.stop());
  const collectService = () => {
    results.memory = {
      peakRssMb: round(service.peakRssKb / 1024, 1),
      highWaterMarkMb: results.memory.highWaterMarkMb,
      samples: service.rssSamples,
      peakByPhaseMb: service.peaksByPhase(),
    };
    results.service = {
      ...results.service,
      warnLines: service.warnLines,
      errorLines: service.errorLines,
      notable: service.notable,
    };
  };
  cleanup.add('service figures', async () => collectService());

  try {
    log(`Starting the service (pid ${service.pid}, port ${port}, queue prefix ${prefix})`);
    await service.waitHealthy();
    results.meta.databaseVersion = await database.version();

    const admin = new ApiClient(service.baseUrl, ADMIN_TOKEN);
    const user = await admin.expect<{ id: string; token: string }>(201, 'POST', '/api/users', {
      username: 'bench',
      is_staff: false,
    });
    admin.close();
    // A user, not staff: every read goes through the ownership filter, as a customer's does.
    const api = new ApiClient(service.baseUrl, user.token);
    cleanup.add('client', async () => api.close());
    const watcher = await EventWatcher.open(service.baseUrl, user.token);
    cleanup.add('event stream', async () => watcher.close());
    const lifecycle = new Lifecycle({
      api,
      watcher,
      service,
      concurrency: options.concurrency,
    });

    service.enterPhase('warm-up');
    const warmup = Math.min(options.n, WARMUP_INSTANCES);
    log(`Warm-up: ${warmup} instances through the lifecycle`);
    await lifecycle.run(warmup, `warmup-${tag}`);

    service.enterPhase('overhead');
    log(`Overhead: ${options.overheadActions} sequential actions on one instance`);
    results.overhead = await lifecycle.overhead(options.overheadActions);

    service.enterPhase('end-to-end');
    log(`End-to-end: ${options.n} instances, create -> stop -> start -> delete`);
    const groupsBefore = await writeGroups(api);
    results.endToEnd = await lifecycle.run(options.n, `e2e-${tag}`);
    const groupsAfter = await writeGroups(api);
    results.writeGroups = {
      statements: groupsAfter.statements - groupsBefore.statements,
      writes: groupsAfter.writes - groupsBefore.writes,
    };
    for (const phase of results.endToEnd) {
      log(`  ${phase.phase}: ${phase.perSecond}/s (${phase.seconds} s)`);
    }
    watcher.close();

    service.enterPhase('floor (service idle)');
    const floorSpec = {
      redisUrl: options.redisUrl,
      prefix: floorPrefix,
      jobs: options.n,
      workerConcurrency: options.workerConcurrency,
      producers: options.concurrency,
      timeoutMs: 60_000 + options.n * 50,
    };
    log(`Floor: ${options.n} no-op Bull jobs`);
    results.floor.noop = await runFloor({ ...floorSpec, database: null });
    log(`Floor: ${options.n} Bull jobs of ${COMMITS_PER_OPERATION} commits each`);
    await database.floorSetup();
    try {
      results.floor.commits = await runFloor({ ...floorSpec, database });
    } finally {
      await database.floorTeardown();
    }
    for (const phase of results.endToEnd) {
      results.floorRatios[phase.phase] = ratio(phase.perSecond, results.floor.commits.perSecond);
    }
    service.enterPhase('HTTP stack');
    log(`HTTP stack alone: ${Math.max(4000, options.acceptRequests)} GET /api/flavors`);
    results.httpStack = await runHttpStack({
      service,
      token: user.token,
      connections: options.concurrency,
      requests: options.acceptRequests,
    });

    for (const [i, size] of options.growth.entries()) {
      service.enterPhase(`growth ${size}`);
      log(`Growth: ${size} instances in the table`);
      const step = await growthStep(
        {
          api,
          database,
          service,
          ownerId: user.id,
          concurrency: options.concurrency,
          acceptRequests: options.acceptRequests,
          acceptRounds: options.acceptRounds,
          pauseQueue: () => pauseQueue(options.redisUrl, prefix),
        },
        size,
        i === 0,
      );
      results.growth.push(step);
      const loads = [step.list, ...step.rounds.flatMap((r) => [r.create, r.poll, r.stop])];
      if (step.queuePaused) loads.push(step.queuePaused.create);
      results.errors.push(...loads.flatMap(assertClean));
      const rates = (pick: (each: AcceptRound) => LoadResult) =>
        step.rounds.map((each) => pick(each).perSecond).join(' / ');
      log(
        `  list p50 ${step.list.p50Ms} ms; req/s by round: create ${rates((r) => r.create)}; ` +
          `GET one ${rates((r) => r.poll)}; stop ${rates((r) => r.stop)}` +
          (step.queuePaused ? `; create, queue paused ${step.queuePaused.create.perSecond}` : ''),
      );
    }
    if (results.growth.length) {
      const first = results.growth[0];
      results.accept = {
        tableRows: first.rows,
        rounds: first.rounds.length,
        create: first.create,
        action: first.stop,
        cpu: { create: first.cpu.create, action: first.cpu.stop },
        queuePaused: first.queuePaused ?? null,
      };
    }
    results.growthRatios = growthRatios(results.growth);
  } catch (error) {
    // A dead service explains every later symptom; say that rather than the symptom.
    throw service.crash ?? error;
  } finally {
    const hwm = service.highWaterMarkKb();
    results.memory.highWaterMarkMb = hwm === null ? null : round(hwm / 1024, 1);
    collectService();
  }

  log('Stopping the service');
  const exit = await service.stop();
  results.service.exit = exit;
  // Nest closes the app on SIGTERM and then re-raises it, so a clean stop ends by that signal.
  if (exit.code !== 0 && exit.signal !== 'SIGTERM') {
    results.errors.push(
      `The service exited with code ${exit.code} (signal ${exit.signal}) on SIGTERM`,
    );
  }
  if (service.errorLines > 0) {
    results.errors.push(
      `The service logged ${service.errorLines} error(s), first: ${service.notable.find((l) => l.level >= 50)?.msg}`,
    );
  }
}

/**
 * Pauses the service's queue for every worker (Bull's global pause, as the dashboard's pause
 * button does): jobs added meanwhile wait in Redis. Answers the resume.
 */
async function pauseQueue(redisUrl: string, prefix: string): Promise<() => Promise<void>> {
  const queue = new Bull(QueueName.InstanceOperations, redisUrl, { prefix });
  try {
    await queue.pause();
  } catch (error) {
    await queue.close();
    throw error;
  }
  return async () => {
    try {
      await queue.resume();
    } finally {
      await queue.close();
    }
  };
}

async function main(): Promise<number> {
  let options: BenchOptions;
  try {
    const parsed = parseOptions(process.argv.slice(2));
    if (parsed === 'help') {
      process.stdout.write(usage());
      return 0;
    }
    options = parsed;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`${error.message}\n\n${usage()}`);
      return 2;
    }
    throw error;
  }

  const results = emptyResults(options);
  const cleanup = new Cleanup();
  const started = performance.now();
  process.once('SIGINT', () => {
    log('Interrupted: cleaning up');
    void cleanup.run().then(() => process.exit(130));
  });

  try {
    await run(options, results, cleanup);
  } catch (error) {
    results.errors.push(
      error instanceof BenchError ? error.message : String((error as Error).stack ?? error),
    );
  } finally {
    await cleanup.run();
  }
  results.meta.durationSeconds = round((performance.now() - started) / 1000, 1);
  results.meta.machine.loadAverageAtEnd = loadavg().map((v) => round(v, 2));
  results.targets = evaluateTargets(results);

  // A failed run must not replace the results of the last good one.
  const out = results.errors.length
    ? options.out.replace(/(\.json)?$/, '.failed.json')
    : options.out;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  if (results.errors.length && serviceLog) {
    writeFileSync(out.replace(/\.json$/, '.service.log'), serviceLog);
  }
  process.stdout.write(`\n${renderReport(results)}\n\nResults: ${relative(process.cwd(), out)}\n`);
  return results.errors.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);

/** The service's counters of writes stored together (PostgreSQL; zero on SQLite). */
async function writeGroups(api: ApiClient): Promise<{ statements: number; writes: number }> {
  const reply = await api.send<string>('GET', '/metrics');
  if (reply.status !== 200) throw new BenchError(`GET /metrics answered ${reply.status}`);
  const sample = (name: string) =>
    Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(reply.body)?.[1] ?? 0);
  return {
    statements: sample('provisor_write_groups_total'),
    writes: sample('provisor_grouped_writes_total'),
  };
}
