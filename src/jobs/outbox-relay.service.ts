import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, Repository } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { TransactionRunner } from '../database/transaction-runner';
import { Operation, OperationStatus } from '../state-machine/operation.entity';
import { JobDispatcher } from './job-dispatcher';

const BATCH = 500;
/** After a re-send, when to look at the row again if no worker has begun it. */
const RESEND_AFTER_MS = 30_000;

/**
 * Re-sends operation rows that were never begun and whose hand-over is due: Redis was down when
 * they were accepted, or the process died between commit and hand-over. The poll is one indexed
 * query on (status, dispatch_after); a re-send of a row Bull already has is a no-op there.
 */
@Injectable()
export class OutboxRelay implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(OutboxRelay.name);
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(
    @InjectRepository(Operation) private readonly operations: Repository<Operation>,
    private readonly dispatcher: JobDispatcher,
    private readonly tx: TransactionRunner,
    private readonly config: AppConfig,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => void this.tick(), this.config.relayIntervalMs);
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  /** One pass; returns how many rows it handed over. */
  async tick(): Promise<number> {
    if (this.running || !this.dispatcher.redisReady) return 0;
    this.running = true;
    try {
      const due = await this.operations
        .createQueryBuilder('o')
        .where('o.status = :status', { status: OperationStatus.Pending })
        .andWhere('o.dispatch_after <= :now', { now: this.tx.timeParam(new Date()) })
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
    } catch (error) {
      this.logger.warn(`Relay pass failed: ${(error as Error).message}`);
      return 0;
    } finally {
      this.running = false;
    }
  }
}
