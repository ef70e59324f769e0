import { InjectQueue } from '@nestjs/bull';
import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Queue } from 'bull';
import { In, Repository } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { PeriodicTask } from '../common/periodic-task';
import { Lease, TransactionRunner } from '../database/transaction-runner';
import { Instance } from '../state-machine/instance.entity';
import { Operation, OperationStatus } from '../state-machine/operation.entity';
import { TRANSITIONAL_STATES, actionOfState } from '../state-machine/instance.machine';
import { TransitionService } from '../state-machine/transition.service';
import { InstanceJobData, QueueName, isRemnant } from '../queues/queues';
import { JobDispatcher } from './job-dispatcher';

const BATCH = 100;
/**
 * Bull reads a job's state in several steps, so a job moving on between them reads as 'stuck':
 * only a job that is gone or finished counts as dead.
 */
const DEAD_JOB_STATES = new Set(['completed', 'failed']);

/**
 * An instance left in a `*_scheduled` or in-progress state longer than `STUCK_AFTER_MS` with no
 * live job for it goes to `erred` with "<action> has timed out."; before that, a begun operation
 * whose job Redis lost is sent again. It only judges while Redis answers: without Redis it
 * cannot tell a live job from a lost one.
 */
@Injectable()
export class StuckSweeper implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(StuckSweeper.name);
  private readonly task = new PeriodicTask(this.logger, 'Sweep', () => this.pass());

  constructor(
    @InjectRepository(Instance) private readonly instances: Repository<Instance>,
    @InjectRepository(Operation) private readonly operations: Repository<Operation>,
    private readonly dispatcher: JobDispatcher,
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue<InstanceJobData>,
    private readonly transitions: TransitionService,
    private readonly tx: TransactionRunner,
    private readonly config: AppConfig,
  ) {}

  onApplicationBootstrap(): void {
    this.task.start(this.config.sweepIntervalMs);
  }

  onApplicationShutdown(): void {
    this.task.stop();
  }

  /** One pass now; how many instances it moved to `erred`. */
  sweep(): Promise<number> {
    return this.task.run();
  }

  /** One sweeper at a time across processes: two would each ask Redis about the same records. */
  private async pass(): Promise<number> {
    if (this.queue.client.status !== 'ready') return 0;
    return (await this.tx.exclusively(Lease.StuckSweep, () => this.sweepStale())) ?? 0;
  }

  /**
   * Looks at instances in a transitional state with no change for `JOB_LOCK_MS`: any with a
   * live job are fine. An operation already begun whose job is gone (Redis restarted empty and
   * took a retry or a running job with it) is sent again, since a run carries on from in
   * progress; past `STUCK_AFTER_MS` the instance goes to `erred` instead. Operations not yet
   * begun are the relay's.
   */
  private async sweepStale(): Promise<number> {
    const now = Date.now();
    const quiet = new Date(now - Math.min(this.config.jobLockMs, this.config.stuckAfterMs));
    const stuck = now - this.config.stuckAfterMs;
    const candidates = await this.tx.read(() =>
      this.instances
        .createQueryBuilder('i')
        .where({ state: In([...TRANSITIONAL_STATES]) })
        .andWhere('i.updated_at < :quiet', { quiet: this.tx.timeParam(quiet) })
        .orderBy('i.updated_at', 'ASC')
        .limit(BATCH)
        .getMany(),
    );
    let swept = 0;
    const quietWithoutJob: Instance[] = [];
    for (const instance of candidates) {
      if (instance.operationId && (await this.hasLiveJob(instance.operationId))) continue;
      if (instance.updatedAt.getTime() < stuck) {
        const action = actionOfState(instance.state);
        if (action && (await this.transitions.sweep(instance, action))) swept++;
      } else if (instance.operationId) {
        quietWithoutJob.push(instance);
      }
    }
    const lost = quietWithoutJob.length
      ? await this.tx.read(() =>
          this.operations.findBy({
            id: In(quietWithoutJob.map((i) => i.operationId!)),
            status: OperationStatus.Running,
          }),
        )
      : [];
    if (swept > 0) this.logger.warn(`Moved ${swept} stuck instance(s) to erred`);
    if (lost.length > 0 && (await this.dispatcher.resend(lost))) {
      this.logger.warn(`Sent again ${lost.length} begun operation(s) whose job Redis lost`);
    }
    return swept;
  }

  private async hasLiveJob(jobId: string): Promise<boolean> {
    const job = await this.queue.getJob(jobId);
    if (!job || isRemnant(job)) return false;
    return !DEAD_JOB_STATES.has(await job.getState());
  }
}
