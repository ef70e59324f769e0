import { Controller, Get, Header, Headers, UnauthorizedException } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { timingSafeEqual } from 'node:crypto';
import { Public } from '../auth/auth.decorators';
import { AppConfig } from '../config/app-config';
import { MetricsService } from './metrics.service';

/** Prometheus text for scrapers; behind `METRICS_TOKEN` when it is set. */
@ApiExcludeController()
@Controller('metrics')
export class MetricsController {
  constructor(
    private readonly metrics: MetricsService,
    private readonly config: AppConfig,
  ) {}

  @Get()
  @Public()
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  async scrape(@Headers('authorization') authorization?: string): Promise<string> {
    const expected = this.config.metricsToken;
    if (expected && !sameSecret(authorization ?? '', `Bearer ${expected}`)) {
      throw new UnauthorizedException(
        'METRICS_TOKEN is set: send Authorization: Bearer <METRICS_TOKEN>',
      );
    }
    return this.metrics.registry.metrics();
  }
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
