import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { LessThan } from 'typeorm';
import { PeriodicTask } from '../common/periodic-task';
import { TransactionRunner } from '../database/transaction-runner';
import { IdempotencyKey } from './idempotency-key.entity';
import { IDEMPOTENCY_TTL_MS } from './idempotency.store';

const EVERY_MS = 15 * 60 * 1000;

/** Forgets idempotency keys older than 24 hours. */
@Injectable()
export class IdempotencyJanitor implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly task = new PeriodicTask(
    new Logger(IdempotencyJanitor.name),
    'Purging idempotency keys',
    () => this.purge(),
  );

  constructor(private readonly tx: TransactionRunner) {}

  onApplicationBootstrap(): void {
    this.task.start(EVERY_MS);
  }

  onApplicationShutdown(): void {
    this.task.stop();
  }

  private async purge(): Promise<number> {
    const cutoff = this.tx.timeParam(new Date(Date.now() - IDEMPOTENCY_TTL_MS));
    const result = await this.tx.run((em) =>
      em.delete(IdempotencyKey, { createdAt: LessThan(cutoff as Date) }),
    );
    return result.affected ?? 0;
  }
}
