import { Agent, request, type ClientRequest } from 'node:http';
import { BenchError } from './client';

/** An event as `GET /api/events/stream` sends it (API.md section 7). */
export interface InstanceEvent {
  id: number;
  type: string;
  instance_id: string;
  state: string;
  error_message: string;
  at: string;
}

type Listener = (event: InstanceEvent, receivedAt: number) => void;

/**
 * One Server-Sent Events connection to the service. Completions are learnt from it rather than by
 * polling: the service wakes the stream when it commits, so the bench hears of a state change at
 * the cost of one indexed read per batch of events, and without adding requests of its own.
 */
export class EventWatcher {
  private readonly listeners = new Set<Listener>();
  private readonly agent = new Agent({ keepAlive: false });
  private req?: ClientRequest;
  private closing = false;
  /** Set when the stream ends before `close()`: the service went away. */
  lost: Error | null = null;
  /** Every `*.failed` event seen: none is expected in a run without injected faults. */
  readonly failures: InstanceEvent[] = [];
  received = 0;

  static open(baseUrl: string, token: string): Promise<EventWatcher> {
    const watcher = new EventWatcher();
    return watcher.connect(baseUrl, token).then(() => watcher);
  }

  on(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves on the next event of `type` for `instanceId`; register it before the request. */
  next(instanceId: string, type: string, timeoutMs: number): Promise<number> {
    const promise = new Promise<number>((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new BenchError(`No ${type} for instance ${instanceId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.on((event, at) => {
        if (event.instance_id !== instanceId) return;
        if (event.type === type) {
          clearTimeout(timer);
          off();
          resolvePromise(at);
        } else if (event.type.endsWith('.failed')) {
          clearTimeout(timer);
          off();
          reject(new BenchError(`${event.type} for ${instanceId}: ${event.error_message}`));
        }
      });
    });
    // A caller whose request failed never awaits this; its time-out must not crash the bench.
    promise.catch(() => undefined);
    return promise;
  }

  close(): void {
    this.closing = true;
    this.req?.destroy();
    this.agent.destroy();
  }

  private connect(baseUrl: string, token: string): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const req = request(
        new URL('/api/events/stream', baseUrl),
        {
          agent: this.agent,
          headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
        },
        (res) => {
          if (res.statusCode !== 200) {
            reject(new BenchError(`GET /api/events/stream answered ${res.statusCode}`));
            res.resume();
            return;
          }
          res.setEncoding('utf8');
          let buffer = '';
          let opened = false;
          res.on('data', (chunk: string) => {
            const receivedAt = performance.now();
            buffer += chunk;
            let end: number;
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              // The first block is the `retry:` line, written once the stream's start is fixed:
              // from here on no event of ours can slip by unseen.
              if (!opened) {
                opened = true;
                resolvePromise();
              }
              this.dispatch(block, receivedAt);
            }
          });
          res.on('end', () => this.onLost(new BenchError('The event stream ended')));
          res.on('error', (error) => this.onLost(error));
        },
      );
      req.on('error', (error) => {
        reject(error);
        this.onLost(error);
      });
      req.end();
      this.req = req;
    });
  }

  private dispatch(block: string, receivedAt: number): void {
    const data = block
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).trimStart())
      .join('\n');
    if (!data) return;
    const event = JSON.parse(data) as InstanceEvent;
    this.received++;
    if (event.type.endsWith('.failed')) this.failures.push(event);
    for (const listener of [...this.listeners]) listener(event, receivedAt);
  }

  private onLost(error: Error): void {
    if (this.closing || this.lost) return;
    this.lost = error;
  }
}

/**
 * Records when each instance reached an event of one type. It listens from its creation, so a
 * completion that arrives before the request's own answer (the worker can be that quick) counts.
 */
export class CompletionTracker {
  private readonly reached = new Map<string, number>();
  private readonly off: () => void;

  constructor(
    private readonly watcher: EventWatcher,
    readonly type: string,
  ) {
    this.off = watcher.on((event, at) => {
      if (event.type === type && !this.reached.has(event.instance_id)) {
        this.reached.set(event.instance_id, at);
      }
    });
  }

  /**
   * Waits until every id has reached the event; returns the time each did (in the order of
   * `ids`) and the time the last did. Fails on a failed operation, a lost stream, no progress
   * for `stallMs`, or `deadlineMs` overall.
   */
  async waitAll(
    ids: readonly string[],
    deadlineMs: number,
    stallMs = 30_000,
  ): Promise<{ lastAt: number; reachedAt: number[] }> {
    const started = performance.now();
    let progressAt = started;
    let done = 0;
    try {
      for (;;) {
        const failures = this.watcher.failures;
        if (failures.length > 0) {
          const first = failures[0];
          throw new BenchError(
            `${failures.length} operation(s) failed, first ${first.type} for ${first.instance_id}: ${first.error_message}`,
          );
        }
        if (this.watcher.lost)
          throw new BenchError(`Event stream lost: ${this.watcher.lost.message}`);
        const now = ids.filter((id) => this.reached.has(id)).length;
        if (now === ids.length) break;
        if (now > done) {
          done = now;
          progressAt = performance.now();
        }
        const elapsed = performance.now() - started;
        if (elapsed > deadlineMs || performance.now() - progressAt > stallMs) {
          throw new BenchError(
            `${ids.length - now} of ${ids.length} instances did not reach ${this.type} ` +
              `(waited ${Math.round(elapsed / 1000)} s)`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      const reachedAt = ids.map((id) => this.reached.get(id)!);
      return { lastAt: reachedAt.reduce((last, at) => Math.max(last, at), 0), reachedAt };
    } finally {
      this.off();
    }
  }
}
