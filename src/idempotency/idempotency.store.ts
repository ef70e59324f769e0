import { Injectable } from '@nestjs/common';
import { QueryFailedError } from 'typeorm';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import { TransactionRunner } from '../database/transaction-runner';
import { IdempotencyKey } from './idempotency-key.entity';

export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000;
/**
 * A key still without an answer after this long belongs to a request whose process died before
 * storing it: the key is free again, rather than answering "in progress" for a day.
 */
const ABANDONED_AFTER_MS = 60_000;

/** Idempotency keys and the answers they hold. */
@Injectable()
export class IdempotencyStore {
  constructor(private readonly tx: TransactionRunner) {}

  /** Reserves the key, or returns the finished request that holds it. */
  async reserve(userId: string, key: string, fingerprint: string): Promise<IdempotencyKey | null> {
    const now = new Date();
    try {
      return await this.tx.run(async (em) => {
        const earlier = await em.findOneBy(IdempotencyKey, { userId, key });
        if (earlier && now.getTime() - earlier.createdAt.getTime() < IDEMPOTENCY_TTL_MS) {
          if (earlier.fingerprint !== fingerprint) {
            throw new DomainError(
              DomainErrorCode.Unprocessable,
              'Idempotency-Key was already used for a different request; use a new key',
            );
          }
          const abandoned = now.getTime() - earlier.createdAt.getTime() > ABANDONED_AFTER_MS;
          if (earlier.statusCode === null && !abandoned) {
            throw new DomainError(
              DomainErrorCode.Conflict,
              'A request with this Idempotency-Key is still in progress; retry shortly',
            );
          }
          if (earlier.statusCode !== null) return earlier;
        }
        if (earlier) await em.delete(IdempotencyKey, { userId, key });
        await em.insert(IdempotencyKey, {
          userId,
          key,
          fingerprint,
          statusCode: null,
          location: null,
          body: null,
          createdAt: now,
        });
        return null;
      });
    } catch (error) {
      // Two first requests with one key at once: the primary key lets one through.
      if (error instanceof QueryFailedError) {
        throw new DomainError(
          DomainErrorCode.Conflict,
          'A request with this Idempotency-Key is still in progress; retry shortly',
        );
      }
      throw error;
    }
  }

  async complete(
    userId: string,
    key: string,
    statusCode: number,
    location: unknown,
    body: unknown,
  ): Promise<void> {
    await this.tx.run((em) =>
      em.update(
        IdempotencyKey,
        { userId, key },
        {
          statusCode,
          location: typeof location === 'string' ? location : null,
          body: (body ?? null) as object | null,
        },
      ),
    );
  }

  async release(userId: string, key: string): Promise<void> {
    await this.tx.run((em) => em.delete(IdempotencyKey, { userId, key }));
  }
}
