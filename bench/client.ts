import autocannon from 'autocannon';
import { Agent, request } from 'node:http';
import type { CpuMeter } from './service';
import { round, summarize, type Latency } from './stats';

export interface Reply<T> {
  status: number;
  body: T;
}

/** A bench failure: the run goes on to clean up, then exits non-zero. */
export class BenchError extends Error {}

/**
 * The bench's own calls (setup, checks, the sequential overhead loop), on keep-alive sockets so
 * a measured request never pays for a TCP handshake.
 */
export class ApiClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });

  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {}

  withToken(token: string): ApiClient {
    return new ApiClient(this.baseUrl, token);
  }

  async send<T = unknown>(method: string, path: string, body?: unknown): Promise<Reply<T>> {
    try {
      return await this.attempt<T>(method, path, body);
    } catch (error) {
      // The server closes an idle keep-alive socket after its timeout; a request written to it
      // at that moment fails unread, so it is sent again once, on a fresh socket.
      if ((error as { reusedSocket?: boolean }).reusedSocket) {
        return this.attempt<T>(method, path, body);
      }
      throw error;
    }
  }

  private attempt<T>(method: string, path: string, body?: unknown): Promise<Reply<T>> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const url = new URL(path, this.baseUrl);
    return new Promise((resolvePromise, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            authorization: `Bearer ${this.token}`,
            ...(payload === undefined
              ? {}
              : {
                  'content-type': 'application/json',
                  'content-length': Buffer.byteLength(payload),
                }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if (text && /json/.test(res.headers['content-type'] ?? '')) parsed = JSON.parse(text);
            resolvePromise({ status: res.statusCode ?? 0, body: parsed as T });
          });
          res.on('error', reject);
        },
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        const code = error.code ?? '';
        if (req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE')) {
          Object.assign(error, { reusedSocket: true });
        }
        reject(error);
      });
      req.end(payload);
    });
  }

  /** Sends and insists on one status; anything else is a bench failure naming the call. */
  async expect<T = unknown>(
    status: number,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<T> {
    const reply = await this.send<T>(method, path, body);
    if (reply.status !== status) {
      throw new BenchError(
        `${method} ${path} answered ${reply.status}, expected ${status}: ${JSON.stringify(reply.body)}`,
      );
    }
    return reply.body;
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface LoadRequest {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  body?: string;
}

export interface LoadSpec {
  title: string;
  baseUrl: string;
  token: string;
  connections: number;
  amount: number;
  /** Request number `i` of the run, 0-based; each is built once, in order. */
  build: (i: number) => LoadRequest;
  /** Whether bodies are needed (they cost the load generator a copy each). */
  onResponse?: (status: number, body: string) => void;
  /**
   * Checked twice a second: a reason to give up (the service died). autocannon alone would
   * reconnect for ever, since a fixed amount of requests never ends without answers.
   */
  abortIf?: () => Error | null;
  /** Told as the first request goes and as the last answer comes (`ServiceProcess.meter`). */
  meter?: Pick<CpuMeter, 'start' | 'end'>;
}

/**
 * Latencies are of requests on open connections. Each connection's first request, which also
 * waits for the connection to be set up, is kept apart (`firstOnConnection`): with 64 connections
 * opened at once against a busy process, a few of them wait up to a second before the service
 * even accepts them (see bench/README.md), and that tail has nothing to do with the request or
 * the size of the table.
 */
export interface LoadResult extends Latency {
  title: string;
  firstOnConnection: Latency;
  requests: number;
  /** From the start to the last answer. */
  seconds: number;
  perSecond: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** The bench process's CPU over the run, in % of one core: the load generator's own load. */
  clientCpuPercent: number;
}

/**
 * A fixed number of requests over keep-alive connections, each waiting for its answer before
 * the next (no pipelining), as real clients do. Latencies are kept raw, not bucketed, so p99 is
 * exact at the sub-millisecond figures an accept takes.
 */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  let next = 0;
  const latencies: number[] = [];
  const firstLatencies: number[] = [];
  const connectionsSeen = new Set<unknown>();
  const statusCodes: Record<string, number> = {};
  const cpuBefore = process.cpuUsage();
  spec.meter?.start();
  const started = performance.now();
  let lastAnswerAt = started;
  return new Promise((resolvePromise, reject) => {
    const instance = autocannon(
      {
        url: spec.baseUrl,
        connections: Math.min(spec.connections, spec.amount),
        amount: spec.amount,
        timeout: 30,
        sampleInt: 100,
        requests: [
          {
            setupRequest: (req) => {
              const built = spec.build(next++);
              // A fresh object each time: autocannon writes Content-Length into the one it gets.
              const headers: Record<string, string> = { authorization: `Bearer ${spec.token}` };
              if (built.body !== undefined) headers['content-type'] = 'application/json';
              return { ...req, method: built.method, path: built.path, headers, body: built.body };
            },
            ...(spec.onResponse
              ? { onResponse: (status: number, body: string) => spec.onResponse?.(status, body) }
              : {}),
          },
        ],
      },
      (error, result) => {
        clearInterval(watchdog);
        // A run with a request lost (an error, a time-out) never reaches its last answer.
        spec.meter?.end();
        if (error || aborted) {
          reject(aborted ?? error);
          return;
        }
        // Not autocannon's duration: it ends a run on its next sampling tick, not at the last answer.
        const seconds = (lastAnswerAt - started) / 1000;
        const cpu = process.cpuUsage(cpuBefore);
        const non2xx = Object.entries(statusCodes)
          .filter(([code]) => !code.startsWith('2'))
          .reduce((sum, [, count]) => sum + count, 0);
        resolvePromise({
          title: spec.title,
          requests: latencies.length + firstLatencies.length,
          seconds: round(seconds, 3),
          perSecond: round((latencies.length + firstLatencies.length) / seconds, 1),
          ...summarize(latencies),
          firstOnConnection: summarize(firstLatencies),
          non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          statusCodes,
          clientCpuPercent: round((cpu.user + cpu.system) / 1e4 / seconds, 1),
        });
      },
    );
    // Generous: the slowest healthy run takes a tenth of this.
    const deadline = started + 60_000 + spec.amount * 50;
    let aborted: Error | null = null;
    const watchdog = setInterval(() => {
      aborted =
        spec.abortIf?.() ??
        (performance.now() > deadline
          ? new BenchError(
              `${spec.title}: ${latencies.length + firstLatencies.length} of ${spec.amount} answered in time`,
            )
          : null);
      if (aborted) instance.stop();
    }, 500);
    instance.on('response', (client, statusCode: number, _bytes, responseTime: number) => {
      lastAnswerAt = performance.now();
      if (latencies.length + firstLatencies.length + 1 === spec.amount) spec.meter?.end();
      if (connectionsSeen.has(client)) {
        latencies.push(responseTime);
      } else {
        connectionsSeen.add(client);
        firstLatencies.push(responseTime);
      }
      statusCodes[statusCode] = (statusCodes[statusCode] ?? 0) + 1;
    });
  });
}

/** A load whose every answer must be 2xx, every request answered. */
export function assertClean(result: LoadResult): string[] {
  const problems: string[] = [];
  if (result.non2xx > 0) {
    problems.push(
      `${result.title}: ${result.non2xx} non-2xx (${JSON.stringify(result.statusCodes)})`,
    );
  }
  if (result.errors > 0 || result.timeouts > 0) {
    problems.push(`${result.title}: ${result.errors} errors, ${result.timeouts} time-outs`);
  }
  return problems;
}
