import { Injectable, Logger, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { LessThan } from 'typeorm';
import { TransactionRunner } from '../database/transaction-runner';
import { IdempotencyKey } from './idempotency-key.entity';
import { IDEMPOTENCY_TTL_MS } from './idempotency.store';

const EVERY_MS = 15 * 60 * 1000;

/** Forgets idempotency keys older than 24 hours. */
@Injectable()
export class IdempotencyJanitor implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(IdempotencyJanitor.name);
  private timer?: NodeJS.Timeout;

  constructor(private readonly tx: TransactionRunner) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => void this.purge(), EVERY_MS);
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  async purge(): Promise<number> {
    try {
      const cutoff = this.tx.timeParam(new Date(Date.now() - IDEMPOTENCY_TTL_MS));
      const result = await this.tx.run((em) =>
        em.delete(IdempotencyKey, { createdAt: LessThan(cutoff as Date) }),
      );
      return result.affected ?? 0;
    } catch (error) {
      this.logger.warn(`Purging idempotency keys failed: ${(error as Error).message}`);
      return 0;
    }
  }
}
