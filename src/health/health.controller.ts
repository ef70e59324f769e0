import { Controller, Get } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import {
  HealthCheck,
  HealthCheckService,
  HealthIndicatorService,
  TypeOrmHealthIndicator,
} from '@nestjs/terminus';
import { Public } from '../auth/auth.decorators';
import { TransactionRunner } from '../database/transaction-runner';
import { RedisHealthIndicator } from './redis.health';

@ApiTags('health')
@Controller('api/health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly database: TypeOrmHealthIndicator,
    private readonly redis: RedisHealthIndicator,
    private readonly indicators: HealthIndicatorService,
    private readonly tx: TransactionRunner,
  ) {}

  @Get()
  @Public()
  @HealthCheck()
  @ApiOperation({
    operationId: 'getHealth',
    summary: '200 when the database and Redis answer, 503 otherwise',
  })
  check() {
    return this.health.check([
      () => {
        // After a failed fsync the database answers, but writes and the reads that wait for
        // durability fail until a restart.
        const failure = this.tx.durabilityFailure;
        if (failure) return this.indicators.check('database').down({ message: failure.message });
        return this.database.pingCheck('database', { timeout: 1500 });
      },
      () => this.redis.isHealthy('redis'),
    ]);
  }
}
