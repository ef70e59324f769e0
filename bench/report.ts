import type { LoadResult } from './client';
import type { FloorRun, HttpStackRun } from './floor';
import type { AcceptRound, GrowthStep } from './growth';
import { PHASE_LABELS, type OverheadResult, type PhaseName, type PhaseResult } from './lifecycle';
import type { LoadCpu, LogLine, ServiceExit } from './service';
import { ratio } from './stats';

export interface BenchResults {
  meta: {
    commit: string | null;
    dirty: boolean | null;
    date: string;
    durationSeconds: number;
    machine: {
      cpus: number;
      cpuModel: string;
      memoryMb: number;
      platform: string;
      release: string;
      /** Other work on the machine skews every figure: the load average says how much there was. */
      loadAverageAtStart: number[];
      loadAverageAtEnd: number[];
    };
    node: string;
    database: 'sqlite' | 'postgres';
    databaseVersion: string | null;
    n: number;
    concurrency: number;
    workerConcurrency: number;
    acceptRequests: number;
    /** Accept rounds at each growth size (see `GrowthStep.rounds`). */
    acceptRounds: number;
    growthSizes: number[];
    overheadActions: number;
    simLatencyMs: number;
    commitsPerOperation: number;
    /** `npm start`'s node options, which every run uses. */
    startNodeArgs: string[];
    /** Extra node options given with --node-args: figures not comparable. */
    serviceNodeArgs: string[];
    fullSize: boolean;
  };
  /** The accept rate at the smallest growth size: the median of its rounds. */
  accept: {
    tableRows: number;
    rounds: number;
    create: LoadResult;
    action: LoadResult;
    /** The service's CPU over each of those runs. */
    cpu: { create: LoadCpu; action: LoadCpu };
    /** The creates again with the queue paused: the requests alone (see `GrowthStep`). */
    queuePaused: { create: LoadResult; cpu: LoadCpu; drainSeconds: number } | null;
  } | null;
  endToEnd: PhaseResult[];
  /**
   * PostgreSQL: over the end-to-end phases, statements that stored several transitions' writes
   * together, and the writes they stored (the service's /metrics, read before and after).
   */
  writeGroups: { statements: number; writes: number } | null;
  overhead: OverheadResult | null;
  floor: { noop: FloorRun | null; commits: FloorRun | null };
  /** One request through the service's HTTP stack, no database: the floor's other part. */
  httpStack: HttpStackRun | null;
  /** End-to-end throughput of each phase over the floor with commits. */
  floorRatios: Partial<Record<PhaseName, number>>;
  growth: GrowthStep[];
  /** Largest size over smallest: 1 is flat. */
  growthRatios: Record<string, number> | null;
  memory: {
    peakRssMb: number;
    highWaterMarkMb: number | null;
    samples: number;
    peakByPhaseMb: Record<string, number>;
  };
  service: {
    warnLines: number;
    errorLines: number;
    notable: LogLine[];
    exit: ServiceExit | null;
  };
  targets: Target[];
  errors: string[];
}

export interface Target {
  name: string;
  value: number | null;
  limit: string;
  pass: boolean | null;
}

export function growthRatios(steps: GrowthStep[]): Record<string, number> | null {
  if (steps.length < 2) return null;
  const small = steps[0];
  const large = steps[steps.length - 1];
  return {
    listP50: ratio(large.list.p50Ms, small.list.p50Ms),
    listP99: ratio(large.list.p99Ms, small.list.p99Ms),
    createP50: ratio(large.create.p50Ms, small.create.p50Ms),
    createP99: ratio(large.create.p99Ms, small.create.p99Ms),
    createRate: ratio(large.create.perSecond, small.create.perSecond),
    pollP50: ratio(large.poll.p50Ms, small.poll.p50Ms),
    pollP99: ratio(large.poll.p99Ms, small.poll.p99Ms),
    pollRate: ratio(large.poll.perSecond, small.poll.perSecond),
    actionP50: ratio(large.stop.p50Ms, small.stop.p50Ms),
    actionP99: ratio(large.stop.p99Ms, small.stop.p99Ms),
    actionRate: ratio(large.stop.perSecond, small.stop.perSecond),
  };
}

/** The issue's targets; reported, never enforced (figures on a shared machine vary). */
export function evaluateTargets(results: BenchResults): Target[] {
  const targets: Target[] = [];
  const check = (name: string, value: number | null, limit: string, pass: (v: number) => boolean) =>
    targets.push({
      name,
      value,
      limit,
      pass: value === null || Number.isNaN(value) ? null : pass(value),
    });

  const ratios = Object.values(results.floorRatios);
  check(
    'end-to-end / floor (slowest phase)',
    ratios.length ? Math.min(...ratios) : null,
    '>= 0.75',
    (v) => v >= 0.75,
  );
  const acceptTarget = results.meta.database === 'sqlite' ? 2000 : 1000;
  const accept = results.accept;
  check(
    'accept rate, req/s (slower of create, stop)',
    accept ? Math.min(accept.create.perSecond, accept.action.perSecond) : null,
    `>= ${acceptTarget}`,
    (v) => v >= acceptTarget,
  );
  check('overhead p99, ms', results.overhead?.visible.p99Ms ?? null, '< 15', (v) => v < 15);
  const g = results.growthRatios;
  check(
    'list latency, largest / smallest table',
    g ? Math.max(g.listP50, g.listP99) : null,
    '<= 1.5',
    (v) => v <= 1.5,
  );
  check(
    'accept latency, largest / smallest table',
    g ? Math.max(g.createP50, g.createP99, g.actionP50, g.actionP99) : null,
    '<= 1.5',
    (v) => v <= 1.5,
  );
  check(
    'peak RSS, MB',
    Math.max(results.memory.peakRssMb, results.memory.highWaterMarkMb ?? 0) || null,
    '< 300',
    (v) => v < 300,
  );
  return targets;
}

export function renderReport(r: BenchResults): string {
  const out: string[] = [];
  const m = r.meta;
  out.push(
    `Provisor benchmark: ${m.database}${m.databaseVersion ? ` ${m.databaseVersion}` : ''}, ` +
      `N=${m.n}, ${m.concurrency} connections, WORKER_CONCURRENCY=${m.workerConcurrency}, ` +
      `SIM_LATENCY_MS=${m.simLatencyMs}`,
  );
  out.push(
    `${m.commit ? m.commit.slice(0, 12) : 'no commit'}${m.dirty ? ' (uncommitted changes)' : ''}, ` +
      `${m.date}, ${m.machine.cpus} x ${m.machine.cpuModel}, ` +
      `Node ${m.node} ${[...m.startNodeArgs, ...m.serviceNodeArgs].join(' ')}, ` +
      `load ${m.machine.loadAverageAtStart[0].toFixed(2)} -> ${m.machine.loadAverageAtEnd[0].toFixed(2)}, ` +
      `${m.durationSeconds.toFixed(0)} s`,
  );

  if (r.accept) {
    out.push('');
    out.push(
      ...table(
        [
          `Accept rate (${fmt(r.accept.tableRows, 0)} rows${
            r.accept.rounds > 1 ? `, median of ${r.accept.rounds} rounds` : ''
          })`,
          'req/s',
          'p50 ms',
          'p99 ms',
          'first on conn. max ms',
          'non-2xx',
          'CPU ms/req',
          'main thread ms/req',
          'main thread busy',
        ],
        [
          [...loadRow('POST /api/instances', r.accept.create), ...cpuCells(r.accept.cpu.create)],
          [
            ...loadRow('POST /api/instances/{id}/stop', r.accept.action),
            ...cpuCells(r.accept.cpu.action),
          ],
          ...(r.accept.queuePaused
            ? [
                [
                  ...loadRow(
                    'POST /api/instances, queue paused (one run)',
                    r.accept.queuePaused.create,
                  ),
                  ...cpuCells(r.accept.queuePaused.cpu),
                ],
              ]
            : []),
        ],
      ),
    );
  }

  if (r.endToEnd.length) {
    out.push('');
    out.push(
      ...table(
        [
          `End-to-end (N=${m.n})`,
          'ops/s',
          'seconds',
          'accept s',
          'done by then',
          'ops/s after',
          'CPU ms/op',
          'main thread ms/op',
          'main busy accepting',
          'x floor',
        ],
        r.endToEnd.map((p) => [
          PHASE_LABELS[p.phase],
          fmt(p.perSecond, 1),
          fmt(p.seconds, 2),
          fmt(p.acceptSeconds, 2),
          fmt(p.doneWhileAccepting, 0),
          p.perSecondAfterAccept === null ? '-' : fmt(p.perSecondAfterAccept, 1),
          p.cpuMsPerOperation === null ? '-' : fmt(p.cpuMsPerOperation, 2),
          p.mainThreadCpuMsPerOperation === null ? '-' : fmt(p.mainThreadCpuMsPerOperation, 2),
          percent(p.acceptMainThreadBusyPercent),
          r.floorRatios[p.phase] === undefined ? '-' : fmt(r.floorRatios[p.phase]!, 2),
        ]),
      ),
    );
    if (r.writeGroups && r.writeGroups.statements > 0) {
      const { statements, writes } = r.writeGroups;
      out.push(
        `Writes stored together: ${writes.toLocaleString('en-US')} in ` +
          `${statements.toLocaleString('en-US')} statements (${fmt(writes / statements, 1)} each)`,
      );
    }
  }

  if (r.floor.noop || r.floor.commits) {
    out.push('');
    const rows: string[][] = [];
    const floorRow = (label: string, run: FloorRun) => [
      label,
      fmt(run.perSecond, 1),
      fmt(run.seconds, 2),
      fmt(run.cpuMsPerJob, 2),
    ];
    if (r.floor.noop) rows.push(floorRow('no-op jobs', r.floor.noop));
    if (r.floor.commits) {
      rows.push(
        floorRow(
          `${r.floor.commits.commitsPerJob} commits per job (${m.database})`,
          r.floor.commits,
        ),
      );
    }
    out.push(...table([`Floor: raw Bull, ${m.n} jobs`, 'jobs/s', 'seconds', 'CPU ms/job'], rows));
  }

  if (r.httpStack) {
    const h = r.httpStack;
    out.push('');
    out.push(
      ...table(
        ['HTTP stack alone (no database)', 'req/s', 'p50 ms', 'p99 ms', 'CPU ms/req'],
        [
          [
            `GET ${h.path}`,
            fmt(h.perSecond, 1),
            fmt(h.p50Ms, 2),
            fmt(h.p99Ms, 2),
            h.cpuMsPerRequest === null ? '-' : fmt(h.cpuMsPerRequest, 3),
          ],
        ],
      ),
    );
  }

  if (r.overhead) {
    out.push('');
    const o = r.overhead;
    out.push(
      ...table(
        [`Overhead (${o.actions} sequential actions)`, 'p50 ms', 'p99 ms', 'max ms'],
        [
          [
            'request -> state visible',
            fmt(o.visible.p50Ms, 2),
            fmt(o.visible.p99Ms, 2),
            fmt(o.visible.maxMs, 2),
          ],
          [
            'request -> 202',
            fmt(o.accepted.p50Ms, 2),
            fmt(o.accepted.p99Ms, 2),
            fmt(o.accepted.maxMs, 2),
          ],
        ],
      ),
    );
  }

  if (r.growth.length) {
    out.push('');
    const head = ['Growth', ...r.growth.map((s) => `${fmt(s.rows, 0)} rows`)];
    if (r.growthRatios) head.push('ratio');
    const g = r.growthRatios;
    const row = (label: string, pick: (s: GrowthStep) => number, key?: string, digits = 2) => {
      const cells = [label, ...r.growth.map((s) => fmt(pick(s), digits))];
      if (g) cells.push(key ? fmt(g[key], 2) : '');
      return cells;
    };
    out.push(
      ...table(head, [
        row('GET list p50 ms', (s) => s.list.p50Ms, 'listP50'),
        row('GET list p99 ms', (s) => s.list.p99Ms, 'listP99'),
        row('GET list: rows counted', (s) => s.listTotal, undefined, 0),
        row('create req/s', (s) => s.create.perSecond, 'createRate', 1),
        row('create p50 ms', (s) => s.create.p50Ms, 'createP50'),
        row('create p99 ms', (s) => s.create.p99Ms, 'createP99'),
        row('GET one instance req/s', (s) => s.poll.perSecond, 'pollRate', 1),
        row('GET one instance p50 ms', (s) => s.poll.p50Ms, 'pollP50'),
        row('GET one instance p99 ms', (s) => s.poll.p99Ms, 'pollP99'),
        row(
          'GET one instance, main thread ms/req',
          (s) => s.cpu.poll.mainThreadMsPerRequest ?? NaN,
        ),
        row('stop req/s', (s) => s.stop.perSecond, 'actionRate', 1),
        row('stop p50 ms', (s) => s.stop.p50Ms, 'actionP50'),
        row('stop p99 ms', (s) => s.stop.p99Ms, 'actionP99'),
        row(
          'non-2xx',
          (s) => s.list.non2xx + s.create.non2xx + s.poll.non2xx + s.stop.non2xx,
          undefined,
          0,
        ),
      ]),
    );
  }

  const rounds = r.growth.filter((step) => step.rounds.length > 1);
  if (rounds.length) {
    out.push('');
    const row = (label: string, pick: (round: AcceptRound) => number, digits: number) => [
      label,
      ...rounds.map((step) => step.rounds.map((round) => fmt(pick(round), digits)).join(' / ')),
    ];
    out.push(
      ...table(
        [
          'Accept rounds (the figures above are their medians)',
          ...rounds.map((step) => `${fmt(step.rows, 0)} rows`),
        ],
        [
          row('create req/s', (x) => x.create.perSecond, 0),
          row('create p99 ms', (x) => x.create.p99Ms, 1),
          row('GET one instance req/s', (x) => x.poll.perSecond, 0),
          row('stop req/s', (x) => x.stop.perSecond, 0),
          row('stop p99 ms', (x) => x.stop.p99Ms, 1),
        ],
      ),
    );
  }

  out.push('');
  const mem = r.memory;
  out.push(
    `Memory: peak RSS ${fmt(mem.peakRssMb, 1)} MB (kernel high-water mark ` +
      `${mem.highWaterMarkMb === null ? '-' : fmt(mem.highWaterMarkMb, 1)} MB, ${mem.samples} samples); by phase: ` +
      Object.entries(mem.peakByPhaseMb)
        .map(([phase, mb]) => `${phase} ${fmt(mb, 0)}`)
        .join(', '),
  );
  out.push(
    `Service log: ${r.service.warnLines} warnings, ${r.service.errorLines} errors` +
      (r.service.exit
        ? `; stopped by SIGTERM in ${fmt(r.service.exit.stopSeconds, 2)} s, ` +
          (r.service.exit.signal
            ? `ended by ${r.service.exit.signal}`
            : `exit code ${r.service.exit.code}`)
        : ''),
  );
  for (const line of r.service.notable.slice(0, 5))
    out.push(`  ${line.level >= 50 ? 'error' : 'warn'}: ${line.msg}`);

  out.push('');
  out.push(
    ...table(
      ['Target', 'value', 'wanted', ''],
      r.targets.map((t) => [
        t.name,
        t.value === null ? '-' : fmt(t.value, 2),
        t.limit,
        t.pass === null ? 'n/a' : t.pass ? 'met' : 'MISSED',
      ]),
    ),
  );
  if (r.errors.length) {
    out.push('');
    out.push(`ERRORS (${r.errors.length}):`);
    for (const error of r.errors) out.push(`  - ${error}`);
  }
  return out.join('\n');
}

function loadRow(label: string, load: LoadResult): string[] {
  return [
    label,
    fmt(load.perSecond, 1),
    fmt(load.p50Ms, 2),
    fmt(load.p99Ms, 2),
    fmt(load.firstOnConnection.maxMs, 2),
    fmt(load.non2xx, 0),
  ];
}

function cpuCells(cpu: LoadCpu): string[] {
  return [
    cpu.msPerRequest === null ? '-' : fmt(cpu.msPerRequest, 3),
    cpu.mainThreadMsPerRequest === null ? '-' : fmt(cpu.mainThreadMsPerRequest, 3),
    percent(cpu.mainThreadBusyPercent),
  ];
}

function percent(value: number | null): string {
  return value === null ? '-' : `${fmt(value, 0)} %`;
}

function fmt(value: number, digits: number): string {
  if (value === undefined || value === null || Number.isNaN(value)) return '-';
  return value.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** First column left-aligned, the figures right-aligned. */
function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])))
      .join('   ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}
