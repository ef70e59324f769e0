import { ApiClient, BenchError, runLoad, type LoadRequest, type LoadResult } from './client';
import { CompletionTracker, type EventWatcher } from './event-stream';
import type { ServiceProcess } from './service';
import { cpuMsPer, round, summarize, type Latency } from './stats';

/** `restop`: delete is allowed from offline only, so the instances stop again before it. */
export type PhaseName = 'provision' | 'stop' | 'start' | 'restop' | 'delete';

interface PhaseSpec {
  label: string;
  /** The event that says the instance reached the phase's target. */
  completion: string;
  request: (id: string) => LoadRequest;
}

const PHASES: Record<Exclude<PhaseName, 'provision'>, PhaseSpec> = {
  stop: {
    label: 'stop -> offline',
    completion: 'instance.stop.succeeded',
    request: (id) => ({ method: 'POST', path: `/api/instances/${id}/stop` }),
  },
  start: {
    label: 'start -> online',
    completion: 'instance.start.succeeded',
    request: (id) => ({ method: 'POST', path: `/api/instances/${id}/start` }),
  },
  restop: {
    label: 'stop -> offline, again',
    completion: 'instance.stop.succeeded',
    request: (id) => ({ method: 'POST', path: `/api/instances/${id}/stop` }),
  },
  delete: {
    label: 'delete -> gone',
    completion: 'instance.deleted',
    request: (id) => ({ method: 'DELETE', path: `/api/instances/${id}` }),
  },
};

export const PHASE_LABELS: Record<PhaseName, string> = {
  provision: 'create -> online',
  stop: PHASES.stop.label,
  start: PHASES.start.label,
  restop: PHASES.restop.label,
  delete: PHASES.delete.label,
};

export interface PhaseResult {
  phase: PhaseName;
  instances: number;
  /** From the first request to the last instance reaching its state. */
  seconds: number;
  perSecond: number;
  /** From the first request to the last `202`. */
  acceptSeconds: number;
  /**
   * Instances that reached their state while the phase's requests were still being answered;
   * the main thread serves those requests first, and the jobs wait their turns.
   */
  doneWhileAccepting: number;
  /** The others over the time from the last `202` to the last instance reaching its state. */
  perSecondAfterAccept: number | null;
  requests: Pick<LoadResult, 'p50Ms' | 'p99Ms' | 'non2xx' | 'errors' | 'timeouts'>;
  /** Service CPU time per operation over the phase (user + system, every thread). */
  cpuMsPerOperation: number | null;
  /** The main thread's share of it: requests, jobs and events all run there. */
  mainThreadCpuMsPerOperation: number | null;
  /** The main thread's CPU from the first request to the last `202`, in % of one core. */
  acceptMainThreadBusyPercent: number | null;
  /** The bench process's CPU over the phase, in % of one core (load, events, checks). */
  clientCpuPercent: number;
}

export interface OverheadResult {
  actions: number;
  /** Request sent to the event that shows the target state. */
  visible: Latency;
  /** Request sent to its `202`. */
  accepted: Latency;
}

export interface LifecycleContext {
  api: ApiClient;
  watcher: EventWatcher;
  service: ServiceProcess;
  concurrency: number;
}

/** Generous: a healthy service at its slowest is ten times quicker than this. */
function deadlineMs(count: number): number {
  return 60_000 + count * 50;
}

/**
 * Drives instances through create -> online, stop -> offline, start -> online, stop -> offline,
 * delete -> gone, all of a phase's requests at the bench's concurrency, then waits for each
 * instance's event.
 */
export class Lifecycle {
  constructor(private readonly ctx: LifecycleContext) {}

  async run(count: number, tag: string): Promise<PhaseResult[]> {
    const { result: created, ids } = await this.provision(count, tag);
    const results = [created];
    for (const phase of ['stop', 'start', 'restop', 'delete'] as const) {
      results.push(await this.phase(phase, ids));
    }
    // Gone means gone. Asked through the list, not by a 404 per instance: each 404 would be a
    // warning in the service's log, and the log is read for trouble.
    const left = await this.ctx.api.expect<{ total: number }>(
      200,
      'GET',
      `/api/instances?name=${encodeURIComponent(tag)}&limit=1`,
    );
    if (left.total !== 0) throw new BenchError(`${left.total} deleted instances are still listed`);
    return results;
  }

  private async provision(
    count: number,
    tag: string,
  ): Promise<{ result: PhaseResult; ids: string[] }> {
    const ids: string[] = [];
    const result = await this.measure(
      'provision',
      count,
      'instance.provision.succeeded',
      () => ids,
      (i) => ({
        method: 'POST',
        path: '/api/instances',
        body: JSON.stringify({ name: `${tag}-${i}`, flavor: 'small' }),
      }),
      (status, body) => {
        if (status === 202) ids.push((JSON.parse(body) as { id: string }).id);
      },
    );
    if (ids.length !== count) {
      throw new BenchError(`create: ${ids.length} of ${count} requests were accepted`);
    }
    await this.spotCheck(ids, 'online');
    return { result, ids };
  }

  private async phase(phase: Exclude<PhaseName, 'provision'>, ids: string[]): Promise<PhaseResult> {
    const spec = PHASES[phase];
    const result = await this.measure(
      phase,
      ids.length,
      spec.completion,
      () => ids,
      (i) => spec.request(ids[i]),
    );
    if (phase !== 'delete') {
      await this.spotCheck(ids, phase === 'start' ? 'online' : 'offline');
    }
    return result;
  }

  private async measure(
    phase: PhaseName,
    count: number,
    completion: string,
    ids: () => string[],
    build: (i: number) => LoadRequest,
    onResponse?: (status: number, body: string) => void,
  ): Promise<PhaseResult> {
    const { api, watcher, service, concurrency } = this.ctx;
    const tracker = new CompletionTracker(watcher, completion);
    const cpuBefore = service.cpuSeconds();
    const mainBefore = service.mainThreadCpuSeconds();
    const clientBefore = process.cpuUsage();
    const meter = service.meter();
    const started = performance.now();
    const load = await runLoad({
      meter,
      title: `${phase} requests`,
      baseUrl: api.baseUrl,
      token: api.token,
      abortIf: () => service.crash,
      connections: concurrency,
      amount: count,
      build,
      onResponse,
    });
    if (load.non2xx > 0 || load.errors > 0 || load.timeouts > 0) {
      throw new BenchError(
        `${phase}: ${load.non2xx} non-2xx answers ${JSON.stringify(load.statusCodes)}, ` +
          `${load.errors} errors, ${load.timeouts} time-outs`,
      );
    }
    const { lastAt, reachedAt } = await tracker.waitAll(ids(), deadlineMs(count));
    const acceptedAt = started + load.seconds * 1000;
    const doneWhileAccepting = reachedAt.filter((at) => at <= acceptedAt).length;
    const afterSeconds = (lastAt - acceptedAt) / 1000;
    const cpuAfter = service.cpuSeconds();
    const mainAfter = service.mainThreadCpuSeconds();
    const client = process.cpuUsage(clientBefore);
    const seconds = (lastAt - started) / 1000;
    return {
      phase,
      instances: count,
      seconds: round(seconds, 3),
      perSecond: round(count / seconds, 1),
      acceptSeconds: load.seconds,
      doneWhileAccepting,
      perSecondAfterAccept:
        afterSeconds > 0 ? round((count - doneWhileAccepting) / afterSeconds, 1) : null,
      requests: {
        p50Ms: load.p50Ms,
        p99Ms: load.p99Ms,
        non2xx: load.non2xx,
        errors: load.errors,
        timeouts: load.timeouts,
      },
      cpuMsPerOperation: cpuMsPer(cpuBefore, cpuAfter, count),
      mainThreadCpuMsPerOperation: cpuMsPer(mainBefore, mainAfter, count),
      acceptMainThreadBusyPercent: meter.use(load.requests).mainThreadBusyPercent,
      clientCpuPercent: round(
        (client.user + client.system) / 1e4 / ((performance.now() - started) / 1000),
        1,
      ),
    };
  }

  /** The event said so; the API must agree, for a sample of the instances. */
  private async spotCheck(ids: string[], state: string): Promise<void> {
    const step = Math.max(1, Math.floor(ids.length / 25));
    for (let i = 0; i < ids.length; i += step) {
      const reply = await this.ctx.api.send<{ state?: string }>('GET', `/api/instances/${ids[i]}`);
      if (reply.status !== 200 || reply.body.state !== state) {
        throw new BenchError(
          `GET /api/instances/${ids[i]} answered ${reply.status} ${JSON.stringify(reply.body)}, ` +
            `expected 200 in state ${state}`,
        );
      }
    }
  }

  /**
   * Sequential actions on one instance with nothing else running: with SIM_LATENCY_MS=0 the
   * time from request to visible state is the service's own cost (HTTP, transactions, queue
   * hand-over, worker pick-up).
   */
  async overhead(actions: number): Promise<OverheadResult> {
    const { api, watcher } = this.ctx;
    // Listening before the request: the worker may be done before the 202 is read.
    const provisioned = new CompletionTracker(watcher, 'instance.provision.succeeded');
    const { id } = await api.expect<{ id: string }>(202, 'POST', '/api/instances', {
      name: 'overhead',
      flavor: 'small',
    });
    await provisioned.waitAll([id], 10_000);
    const visible: number[] = [];
    const accepted: number[] = [];
    let online = true;
    for (let k = 0; k < actions; k++) {
      const action = online ? 'stop' : 'start';
      const done = watcher.next(id, `instance.${action}.succeeded`, 10_000);
      const t0 = performance.now();
      const reply = await api.send('POST', `/api/instances/${id}/${action}`);
      const t1 = performance.now();
      if (reply.status !== 202) {
        throw new BenchError(`${action} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
      }
      const t2 = await done;
      accepted.push(t1 - t0);
      visible.push(t2 - t0);
      online = !online;
    }
    if (online) {
      const stopped = watcher.next(id, 'instance.stop.succeeded', 10_000);
      await api.expect(202, 'POST', `/api/instances/${id}/stop`);
      await stopped;
    }
    const gone = watcher.next(id, 'instance.deleted', 10_000);
    await api.expect(202, 'DELETE', `/api/instances/${id}`);
    await gone;
    return { actions, visible: summarize(visible), accepted: summarize(accepted) };
  }
}
