import { InjectQueue } from '@nestjs/bull';
import { Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { OnEvent } from '@nestjs/event-emitter';
import type { Queue } from 'bull';
import { AppConfig } from '../config/app-config';
import { TurnBatch } from '../common/turn-batch';
import { withTimeout } from '../common/with-timeout';
import { OPERATION_SCHEDULED, OperationScheduledSignal } from '../state-machine/domain-events';
import type { Instance } from '../state-machine/instance.entity';
import type { Operation } from '../state-machine/operation.entity';
import { InstanceJobData, QueueName, instanceJobOptions, isRemnant } from '../queues/queues';

/** How long a hand-over to Redis may take before the relay is left to do it. */
const ADD_TIMEOUT_MS = 2_000;

/**
 * The one class that adds jobs. An operation row becomes a job whose id is the row's id, so a
 * second hand-over of the same row (the relay after the request path) is a no-op in Bull.
 */
@Injectable()
export class JobDispatcher implements OnModuleInit {
  private readonly logger = new Logger(JobDispatcher.name);
  /** A hand-over was skipped or failed since the relay last asked. */
  private missed = false;
  private connected = true;
  /** Rows committed together, handed over together once the commit's callbacks are done. */
  private readonly scheduled = new TurnBatch<OperationScheduledSignal>((scheduled) => {
    void this.dispatch(scheduled);
  }, 'tick');

  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue<InstanceJobData>,
    private readonly config: AppConfig,
  ) {}

  /**
   * Right after COMMIT (on SQLite before its fsync: `OPERATION_SCHEDULED`) the new row is handed
   * over, and the request path does not wait for it. Rows committed together (one commit serves
   * many requests on SQLite) go to Redis together, in one `addBulk`, as soon as the commit's
   * callbacks are done (`TurnBatch` 'tick'). While Redis is down nothing is sent (Bull would hold
   * the command until Redis returns); the rows stay pending and the relay sends them later.
   */
  @OnEvent(OPERATION_SCHEDULED)
  onScheduled(scheduled: OperationScheduledSignal): void {
    this.scheduled.add(scheduled);
  }

  /** Says when the queue's Redis connection is lost and when it is back, once each time. */
  onModuleInit(): void {
    const client = this.queue.client;
    client.on('error', (error: Error) => {
      if (this.connected) {
        this.connected = false;
        this.logger.error(
          `Redis at the queue is unreachable (${error.message}); requests are still accepted ` +
            'and their jobs wait in the database until it is back',
        );
      }
    });
    client.on('ready', () => {
      if (!this.connected) this.logger.log('Redis at the queue is reachable again');
      this.connected = true;
    });
  }

  /** Whether a hand-over was missed since the last call: the relay then sends at once. */
  takeMissed(): boolean {
    const missed = this.missed;
    this.missed = false;
    return missed;
  }

  get redisReady(): boolean {
    return this.queue.client.status === 'ready';
  }

  /**
   * The relay's hand-over of rows that are still pending: first clears the remnant a Redis
   * restarted empty can hold under a row's id (a command queued during the outage writes a few
   * fields of the old job), or Bull would take it for a job and the add would be a no-op.
   * True if Redis took them all.
   */
  async resend(operations: readonly Operation[]): Promise<boolean> {
    if (operations.length === 0) return true;
    if (!this.redisReady) {
      this.missed = true;
      return false;
    }
    try {
      await withTimeout(
        Promise.all(operations.map((op) => this.clearRemnant(op.id))),
        ADD_TIMEOUT_MS,
        'Checking jobs in Redis',
      );
    } catch (error) {
      this.missed = true;
      this.logger.warn(`Could not check jobs before a re-send: ${(error as Error).message}`);
      return false;
    }
    return this.dispatch(operations.map((operation) => ({ operation })));
  }

  private async clearRemnant(jobId: string): Promise<void> {
    const job = await this.queue.getJob(jobId);
    if (!job || !isRemnant(job)) return;
    this.logger.warn(`Job ${jobId} is a remnant without a payload: sending its operation again`);
    await job.remove().catch(() => undefined);
  }

  /**
   * Hands rows to Bull; true if Redis took them all. Never throws. A job from the request path
   * also carries its instance as scheduled, with the operation (`InstanceJobData.scheduled`).
   */
  private async dispatch(
    operations: readonly { operation: Operation; instance?: Instance }[],
  ): Promise<boolean> {
    if (operations.length === 0) return true;
    if (!this.redisReady) {
      this.missed = true;
      return false;
    }
    const options = instanceJobOptions(this.config);
    try {
      await withTimeout(
        this.queue.addBulk(
          operations.map(({ operation: op, instance }) => ({
            name: op.action,
            data: {
              operationId: op.id,
              instanceId: op.instanceId,
              requestId: op.requestId ?? undefined,
              scheduled: instance && { operation: op, instance },
            },
            opts: { ...options, jobId: op.id },
          })),
        ),
        ADD_TIMEOUT_MS,
        'Adding jobs to Redis',
      );
      return true;
    } catch (error) {
      this.missed = true;
      this.logger.warn(
        `Could not hand ${operations.length} operation(s) to the queue; the relay will retry: ${
          (error as Error).message
        }`,
      );
      return false;
    }
  }
}
