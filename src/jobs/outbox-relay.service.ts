import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, Repository } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { PeriodicTask } from '../common/periodic-task';
import { TransactionRunner } from '../database/transaction-runner';
import { Operation, OperationStatus, RELAY_GRACE_MS } from '../state-machine/operation.entity';
import { JobDispatcher } from './job-dispatcher';

const BATCH = 500;
/** After a re-send, when to look at the row again if no worker has begun it. */
const RESEND_AFTER_MS = 30_000;

/**
 * Re-sends operation rows that were never begun and whose hand-over is due: Redis was down when
 * they were accepted, or the process died between commit and hand-over. A row is due a few
 * seconds after it was written, or at once when this process knows it missed a hand-over. The
 * poll is one indexed query on (status, dispatch_after); a re-send of a row Bull already has is
 * a no-op there.
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
    // After a missed hand-over, rows still in their grace period are due at once too; rows
    // another relay has just claimed (RESEND_AFTER_MS ahead) are not.
    const now = Date.now();
    const horizon = new Date(this.dispatcher.takeMissed() ? now + RELAY_GRACE_MS : now);
    const due = await this.claim(horizon);
    if (due.length === 0) return 0;
    if (!(await this.dispatcher.resend(due))) {
      // Not sent: give the rows back so that the next pass, here or elsewhere, takes them.
      await this.tx.run((em) =>
        em.update(
          Operation,
          { id: In(due.map((op) => op.id)), status: OperationStatus.Pending },
          { dispatchAfter: new Date() },
        ),
      );
      return 0;
    }
    this.logger.log(`Handed ${due.length} pending operation(s) to the queue`);
    return due.length;
  }

  /**
   * Takes the due rows for this pass by moving their next look `RESEND_AFTER_MS` ahead, in one
   * transaction. On PostgreSQL the rows are read `FOR UPDATE SKIP LOCKED`, so relays in several
   * processes split the backlog instead of sending it twice; SQLite has a single process.
   */
  private claim(horizon: Date): Promise<Operation[]> {
    return this.tx.run(async (em) => {
      const query = em
        .createQueryBuilder(Operation, 'o')
        .where('o.status = :status', { status: OperationStatus.Pending })
        .andWhere('o.dispatch_after <= :horizon', { horizon: this.tx.timeParam(horizon) })
        .orderBy('o.dispatch_after', 'ASC')
        .limit(BATCH);
      if (!this.tx.isSqlite) query.setLock('pessimistic_write').setOnLocked('skip_locked');
      const due = await query.getMany();
      if (due.length > 0) {
        await em.update(
          Operation,
          { id: In(due.map((op) => op.id)) },
          { dispatchAfter: new Date(Date.now() + RESEND_AFTER_MS) },
        );
      }
      return due;
    });
  }
}
