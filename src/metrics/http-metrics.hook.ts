import { Injectable, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MetricsService } from './metrics.service';

/**
 * Counts and times every answered request by its route pattern (`/api/instances/:id`), never by
 * its raw path: a Fastify `onResponse` hook, added before the server starts. A reply its route
 * takes over (`reply.hijack()`, the event stream) runs no hooks: its route counts it with
 * `observeWhenClosed`, once the stream ends.
 */
@Injectable()
export class HttpMetricsHook implements OnModuleInit {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    private readonly metrics: MetricsService,
  ) {}

  onModuleInit(): void {
    const fastify = this.adapterHost.httpAdapter.getInstance<FastifyInstance>();
    fastify.addHook('onResponse', (request, reply, done) => {
      this.observe(request, reply);
      done();
    });
  }

  /** For a hijacked reply: counted, with the stream's whole life, when its connection closes. */
  observeWhenClosed(request: FastifyRequest, reply: FastifyReply): void {
    reply.raw.once('close', () => this.observe(request, reply));
  }

  private observe(request: FastifyRequest, reply: FastifyReply): void {
    const route = request.routeOptions.url ?? 'unmatched';
    const method = request.method;
    this.metrics.httpRequests.inc({ method, route, status: String(reply.statusCode) });
    this.metrics.httpDuration.observe({ method, route }, reply.elapsedTime / 1000);
  }
}
