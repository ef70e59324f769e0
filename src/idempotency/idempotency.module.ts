import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { IdempotencyJanitor } from './idempotency-janitor.service';
import { IdempotencyKey } from './idempotency-key.entity';
import { Idempotency } from './idempotency.service';
import { IdempotencyStore } from './idempotency.store';

@Module({
  imports: [TypeOrmModule.forFeature([IdempotencyKey])],
  providers: [IdempotencyStore, Idempotency, IdempotencyJanitor],
  exports: [IdempotencyStore, Idempotency],
})
export class IdempotencyModule {}
