import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, Repository } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { PeriodicTask } from '../common/periodic-task';
import { TransactionRunner } from '../database/transaction-runner';
import { Operation, OperationStatus } from '../state-machine/operation.entity';
import { JobDispatcher } from './job-dispatcher';

const BATCH = 500;
/** After a re-send, when to look at the row again if no worker has begun it. */
const RESEND_AFTER_MS = 30_000;
const FAR_FUTURE = new Date('9999-12-31T00:00:00Z');

/**
 * Re-sends operation rows that were never begun and whose hand-over is due: Redis was down when
 * they were accepted, or the process died between commit and hand-over. A row is due a few
 * seconds after it was written, or at once when this process knows it missed a hand-over. The poll is one indexed
 * query on (status, dispatch_after); a re-send of a row Bull already has is a no-op there.
 */
@Injectable()
export class OutboxRelay implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(OutboxRelay.name);
  private readonly task = new PeriodicTask(this.logger, 'Relay pass', () => this.pass());

  constructor(
    @InjectRepository(Operation) private readonly operations: Repository<Operation>,
    private readonly dispatcher: JobDispatcher,
    private readonly tx: TransactionRunner,
    private readonly config: AppConfig,
  ) {}

  onApplicationBootstrap(): void {
    this.task.start(this.config.relayIntervalMs);
  }

  onApplicationShutdown(): void {
    this.task.stop();
  }

  /** One pass now; how many rows it handed over. */
  tick(): Promise<number> {
    return this.task.run();
  }

  private async pass(): Promise<number> {
    if (!this.dispatcher.redisReady) return 0;
    // After a missed hand-over, every pending row is due at once, not after its grace period.
    const horizon = this.dispatcher.takeMissed() ? FAR_FUTURE : new Date();
    const due = await this.operations
      .createQueryBuilder('o')
      .where('o.status = :status', { status: OperationStatus.Pending })
      .andWhere('o.dispatch_after <= :horizon', { horizon: this.tx.timeParam(horizon) })
      .orderBy('o.dispatch_after', 'ASC')
      .limit(BATCH)
      .getMany();
    if (due.length === 0 || !(await this.dispatcher.dispatch(due))) return 0;
    await this.tx.run((em) =>
      em.update(
        Operation,
        { id: In(due.map((op) => op.id)), status: OperationStatus.Pending },
        { dispatchAfter: new Date(Date.now() + RESEND_AFTER_MS) },
      ),
    );
    this.logger.log(`Handed ${due.length} pending operation(s) to the queue`);
    return due.length;
  }
}
