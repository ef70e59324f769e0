import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, Repository, SelectQueryBuilder } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { PeriodicTask } from '../common/periodic-task';
import { EntityStatements, Statements } from '../database/entity-statements';
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
  private readonly statements: EntityStatements<Operation>;

  constructor(
    @InjectRepository(Operation) private readonly operations: Repository<Operation>,
    private readonly dispatcher: JobDispatcher,
    private readonly tx: TransactionRunner,
    private readonly config: AppConfig,
    statements: Statements,
  ) {
    this.statements = statements.of(Operation);
  }

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
   * Takes the due rows for this pass by moving their next look `RESEND_AFTER_MS` ahead. On
   * PostgreSQL that is one statement, an UPDATE of the rows a sub-select reads `FOR UPDATE SKIP
   * LOCKED`: relays in several processes split the backlog instead of sending it twice, and the
   * rows are locked only while the statement runs, so a worker's write that closes or begins one
   * of them (which waits for the lock while it holds the event log's) is not kept waiting for a
   * relay's round trips. SQLite has a single process, and reads and updates in one transaction.
   */
  private async claim(horizon: Date): Promise<Operation[]> {
    const next = () => new Date(Date.now() + RESEND_AFTER_MS);
    const due = (query: SelectQueryBuilder<Operation>) =>
      query
        .where('o.status = :status', { status: OperationStatus.Pending })
        .andWhere('o.dispatch_after <= :horizon', { horizon: this.tx.timeParam(horizon) })
        .orderBy('o.dispatch_after', 'ASC')
        .limit(BATCH);
    if (this.tx.isSqlite) {
      return this.tx.run(async (em) => {
        const rows = await due(em.createQueryBuilder(Operation, 'o')).getMany();
        if (rows.length > 0) {
          const ids = In(rows.map((op) => op.id));
          await em.update(Operation, { id: ids }, { dispatchAfter: next() });
        }
        return rows;
      });
    }
    const locked = due(this.operations.createQueryBuilder('o').select('o.id'))
      .setLock('pessimistic_write')
      .setOnLocked('skip_locked');
    // `ARRAY(subquery)` runs the locking read once, as an init plan: an `IN (subquery)` may be
    // planned as a join that reads it again, locking more rows than a batch.
    const { raw } = await this.operations
      .createQueryBuilder()
      .update()
      .set({ dispatchAfter: next() })
      .where(`id = ANY(ARRAY(${locked.getQuery()}))`)
      .setParameters(locked.getParameters())
      .returning('*')
      .execute();
    // RETURNING answers in no particular order: the oldest first, as the read took them.
    return (raw as Record<string, unknown>[])
      .map((row) => this.statements.fromRow(row))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }
}
