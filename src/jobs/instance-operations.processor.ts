import { InjectQueue } from '@nestjs/bull';
import {
  BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  OnApplicationBootstrap,
} from '@nestjs/common';
import { EventEmitter2 } from '@nestjs/event-emitter';
import type { Job, Queue } from 'bull';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  BackendError,
  CLOUD_BACKEND,
  CloudBackend,
  OperationContext,
} from '../backend/cloud-backend';
import { AppConfig } from '../config/app-config';
import { withTimeout } from '../common/with-timeout';
import type { Instance } from '../state-machine/instance.entity';
import { Action, InstanceState } from '../state-machine/instance.machine';
import type { Operation } from '../state-machine/operation.entity';
import { OperationResult, TransitionService } from '../state-machine/transition.service';
import {
  InstanceJobData,
  JOB_FINISHED,
  JobFinishedSignal,
  QueueName,
  scheduledOf,
} from '../queues/queues';

/** Bull rejects some promises with no reason at all (a connection that ended without an error). */
function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : `${String(error)} (no reason given)`;
}

/** A failure that must not be retried: the instance is already `erred`, or must become so. */
class PermanentFailure extends Error {}

/** Why a job's backend call was abandoned at shutdown: not a failure of the operation. */
const HAND_BACK = 'handed back at shutdown';

const NOT_AT_BACKEND = 'Does not exist at backend.';

/**
 * Consumes instance operation jobs: scheduled -> in progress -> backend call -> target state, or
 * `erred` with a message. Transient backend errors are thrown for Bull to retry with backoff; the
 * last attempt, a permanent error or a time-out fails the operation at once.
 *
 * The handler is registered by hand, not with `@Process`, so that `WORKER_CONCURRENCY` comes from
 * validated config and `APP_ROLE=api` processes never consume.
 *
 * At shutdown the worker takes no new job and gives running ones `SHUTDOWN_GRACE_MS` to finish.
 * Those still running are handed back: their backend calls are abandoned (drivers are idempotent
 * per operation, so the next run carries on) and the job goes back to the queue for its next
 * attempt. A job already on its last attempt is left to Bull's stalled-job check, which queues it
 * again once its lock lapses (`JOB_LOCK_MS`); that way no attempt is spent on a shutdown.
 */
@Injectable()
export class InstanceOperationsProcessor
  implements OnApplicationBootstrap, BeforeApplicationShutdown
{
  private readonly logger = new Logger(InstanceOperationsProcessor.name);
  /** Jobs this process is running, by job id. */
  private readonly running = new Map<string, AbortController>();
  private stopping = false;
  /** Bull's naming of the worker's connection, under way from the start of processing. */
  private workerNamed: Promise<unknown> = Promise.resolve();

  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue<InstanceJobData>,
    @Inject(CLOUD_BACKEND) private readonly backend: CloudBackend,
    private readonly transitions: TransitionService,
    private readonly config: AppConfig,
    private readonly emitter: EventEmitter2,
  ) {}

  onApplicationBootstrap(): void {
    if (!this.config.runsWorkers) return;
    this.keepWorkerNaming();
    this.queue
      .process('*', this.config.workerConcurrency, (job: Job<InstanceJobData>) => this.process(job))
      .catch((error: unknown) => {
        // A stop before the worker was up ends its start with Redis closed: nothing to report.
        if (!this.stopping) this.logger.error(`Worker stopped: ${reasonOf(error)}`);
      });
    // A job whose worker died more often than Bull allows fails without reaching the handler.
    this.queue.on('failed', (job: Job<InstanceJobData>, error: Error) => {
      if (/stalled more than allowable limit/i.test(error.message)) void this.failStalled(job);
    });
  }

  /**
   * `process()` names the worker's blocking Redis connection (`CLIENT SETNAME`), which connects
   * it, and drops the promise. A stop while that command waits (a process stopped just after it
   * started) would reject it unhandled, which crashes the process on its way out, or let the
   * connection open after Bull has closed it, which keeps the process from exiting. So the
   * promise is kept, and a stop waits for it before closing. The name only labels the connection
   * in `CLIENT LIST`: a failure to set it is logged and nothing more.
   */
  private keepWorkerNaming(): void {
    const setWorkerName = this.queue.setWorkerName.bind(this.queue);
    this.queue.setWorkerName = () =>
      (this.workerNamed = setWorkerName().catch((error: unknown) => {
        if (!this.stopping) {
          this.logger.warn(`Could not name the worker's Redis connection: ${reasonOf(error)}`);
        }
      }));
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    if (!this.config.runsWorkers) return;
    await withTimeout(this.workerNamed, 1_000, 'Starting the worker').catch(() => undefined);
    // A local pause: this process takes no new job; others go on. Bull needs Redis for it.
    await withTimeout(this.queue.pause(true, true), 1_000, 'Pausing the worker').catch(
      () => undefined,
    );
    const deadline = Date.now() + this.config.shutdownGraceMs;
    while (this.running.size > 0 && Date.now() < deadline) await sleep(25);
    if (this.running.size > 0) {
      this.logger.warn(`Handing ${this.running.size} running job(s) back to the queue`);
      for (const abort of this.running.values()) abort.abort(HAND_BACK);
      // Time for Bull to record the handed-back attempts; any it misses, the stalled check finds.
      await sleep(250);
    }
    // Jobs left on their last attempt never settle: close without waiting for them.
    await withTimeout(this.queue.close(true), 2_000, 'Closing the queue').catch(() => undefined);
  }

  async process(job: Job<InstanceJobData>): Promise<{ outcome: string }> {
    const startedAt = performance.now();
    let outcome: JobFinishedSignal['outcome'] = 'failed';
    try {
      const result = await this.run(job);
      outcome = result.outcome === 'succeeded' ? 'succeeded' : 'skipped';
      return result;
    } catch (error) {
      if (!(error instanceof PermanentFailure)) outcome = 'retried';
      throw error;
    } finally {
      const signal: JobFinishedSignal = {
        action: job.name as Action,
        outcome,
        seconds: (performance.now() - startedAt) / 1000,
      };
      this.emitter.emit(JOB_FINISHED, signal);
      // One line per job run, with the ids that lead back to the request that asked for it.
      this.logger.log({
        msg: `job ${job.name} ${outcome}`,
        jobId: job.id,
        operationId: job.data.operationId,
        instanceId: job.data.instanceId,
        requestId: job.data.requestId,
        attempt: job.attemptsMade + 1,
        durationMs: Math.round(signal.seconds * 1000),
      });
    }
  }

  private async run(job: Job<InstanceJobData>): Promise<{ outcome: string }> {
    // Taken just as the worker paused: not begun, so simply the next worker's.
    if (this.stopping) return this.handBack(job);
    const abort = new AbortController();
    this.running.set(String(job.id), abort);
    try {
      return await this.runOwned(job, abort);
    } finally {
      this.running.delete(String(job.id));
    }
  }

  private async runOwned(
    job: Job<InstanceJobData>,
    abort: AbortController,
  ): Promise<{ outcome: string }> {
    const started = await this.transitions.begin(job.data.operationId, scheduledOf(job.data));
    if (!started) return { outcome: 'skipped: the operation no longer owns the instance' };
    const { operation, instance } = started;
    const timer = setTimeout(() => abort.abort(), this.config.jobTimeoutMs);
    try {
      const result = await this.runAbortable(operation, instance, abort.signal);
      await this.transitions.succeed(operation, result, instance);
      return { outcome: 'succeeded' };
    } catch (error) {
      if (abort.signal.reason === HAND_BACK) return this.handBack(job);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const retryable =
        !abort.signal.aborted &&
        !(error instanceof PermanentFailure) &&
        !(error instanceof BackendError && !error.transient);
      if (retryable && !lastAttempt) {
        this.logger.warn(
          `${operation.action} of instance ${instance.id} (operation ${operation.id}) failed on ` +
            `attempt ${job.attemptsMade + 1} of ${job.opts.attempts}; retrying: ${(error as Error).message}`,
        );
        throw error;
      }
      const message = this.describe(operation, error, abort.signal.aborted);
      this.logger.warn(`Instance ${instance.id} (operation ${operation.id}): ${message}`);
      await this.transitions.fail(operation, message, traceOf(error), instance);
      await job.discard();
      throw new PermanentFailure(message);
    } finally {
      clearTimeout(timer);
    }
  }

  /** See the class comment: the next attempt if there is one, else the stalled-job check. */
  private handBack(job: Job<InstanceJobData>): Promise<never> {
    const attemptsLeft = job.attemptsMade + 1 < (job.opts.attempts ?? 1);
    if (attemptsLeft) return Promise.reject(new Error(HAND_BACK));
    return new Promise<never>(() => undefined);
  }

  /** The backend call, abandoned when `JOB_TIMEOUT_MS` passes even if the driver ignores the signal. */
  private runAbortable(operation: Operation, instance: Instance, signal: AbortSignal) {
    if (signal.aborted) return Promise.reject(new PermanentFailure('cancelled before it began'));
    const aborted = new Promise<never>((_, reject) =>
      signal.addEventListener('abort', () => reject(new PermanentFailure('timed out')), {
        once: true,
      }),
    );
    const ctx: OperationContext = { operationId: operation.id, instanceId: instance.id, signal };
    return Promise.race([this.callBackend(operation, instance, ctx), aborted]);
  }

  private async callBackend(
    operation: Operation,
    instance: Instance,
    ctx: OperationContext,
  ): Promise<OperationResult> {
    const id = instance.backendId;
    switch (operation.action) {
      case Action.Provision: {
        const { name, flavor, image } = instance;
        return this.backend.provision(ctx, { name, flavor, image });
      }
      case Action.Start:
        await this.backend.start(ctx, id);
        return {};
      case Action.Stop:
        await this.backend.stop(ctx, id);
        return {};
      case Action.Restart:
        await this.backend.restart(ctx, id);
        return {};
      case Action.Resize: {
        const flavor = operation.params.flavor ?? instance.flavor;
        await this.backend.resize(ctx, id, flavor);
        return { flavor };
      }
      case Action.Delete:
        // A forced delete of a VM the backend never had removes the record, and says so.
        if (!id && operation.params.force) throw new PermanentFailure(NOT_AT_BACKEND);
        if (id) await this.backend.delete(ctx, id);
        return {};
      case Action.Pull: {
        const vm = await this.backend.describe(ctx, id);
        if (!vm) throw new PermanentFailure(NOT_AT_BACKEND);
        return {
          reportedState: vm.state === 'online' ? InstanceState.Online : InstanceState.Offline,
        };
      }
    }
  }

  private describe(operation: Operation, error: unknown, timedOut: boolean): string {
    const action = operation.action;
    if (timedOut) {
      return `${action} failed: backend operation timed out after ${this.config.jobTimeoutMs} ms`;
    }
    if (error instanceof PermanentFailure) return error.message;
    if (error instanceof BackendError) return `${action} failed: ${error.message}`;
    this.logger.error(
      `Operation ${operation.id} (${action}) failed unexpectedly: ${traceOf(error)}`,
    );
    return `${action} failed: internal error in Provisor; operators can see the details`;
  }

  private async failStalled(job: Job<InstanceJobData>): Promise<void> {
    try {
      const started = await this.transitions.begin(job.data.operationId);
      if (!started) return;
      const message = `${started.operation.action} failed: the worker running it stopped responding`;
      await this.transitions.fail(started.operation, message, '');
    } catch (error) {
      this.logger.warn(`Could not fail stalled job ${job.id}: ${(error as Error).message}`);
    }
  }
}

function traceOf(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}
