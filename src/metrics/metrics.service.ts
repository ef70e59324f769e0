import { InjectQueue } from '@nestjs/bull';
import { Injectable } from '@nestjs/common';
import { OnEvent } from '@nestjs/event-emitter';
import { InjectRepository } from '@nestjs/typeorm';
import type { Queue } from 'bull';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Repository } from 'typeorm';
import { withTimeout } from '../common/with-timeout';
import { TransactionRunner } from '../database/transaction-runner';
import { JOB_FINISHED, JobFinishedSignal, QueueName } from '../queues/queues';
import { INSTANCE_EVENT, InstanceEventSignal } from '../state-machine/domain-events';
import { Instance } from '../state-machine/instance.entity';
import { Operation, OperationStatus } from '../state-machine/operation.entity';
import { TransitionService } from '../state-machine/transition.service';

type GroupStats = TransitionService['groupStats'];

/**
 * Provisor's Prometheus metrics (prom-client), in a registry of its own. Counters move with the
 * domain signals; gauges read the database and the queue when scraped.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();

  readonly httpRequests = new Counter({
    name: 'provisor_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });

  readonly httpDuration = new Histogram({
    name: 'provisor_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  private readonly transitions = new Counter({
    name: 'provisor_transitions_total',
    help: 'Instance transitions made by this process, by action and outcome (scheduled, started, succeeded, failed, updated, deleted)',
    labelNames: ['action', 'outcome'] as const,
    registers: [this.registry],
  });

  private readonly jobDuration = new Histogram({
    name: 'provisor_job_duration_seconds',
    help: 'Time a worker spent on one run of a job, by action and outcome (succeeded, failed, retried, skipped)',
    labelNames: ['action', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });

  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue,
    @InjectRepository(Instance) private readonly instances: Repository<Instance>,
    @InjectRepository(Operation) private readonly operations: Repository<Operation>,
    private readonly tx: TransactionRunner,
    transitions: TransitionService,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: 'provisor_process_' });
    // Counters kept by the transition service, read when scraped.
    const groupCounter = (name: string, help: string, pick: (stats: GroupStats) => number) => {
      const counter: Counter = new Counter({
        name,
        help,
        registers: [this.registry],
        collect: () => {
          counter.reset();
          counter.inc(pick(transitions.groupStats));
        },
      });
    };
    groupCounter(
      'provisor_write_groups_total',
      'PostgreSQL: statements that stored the writes of several transitions together',
      (stats) => stats.groups,
    );
    groupCounter(
      'provisor_grouped_writes_total',
      'PostgreSQL: transitions whose writes were stored by such a statement',
      (stats) => stats.grouped,
    );
    const queueJobs: Gauge = new Gauge({
      name: 'provisor_queue_jobs',
      help: 'Jobs in the instance-operations queue, by state (absent while Redis is unreachable)',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect: async () => {
        queueJobs.reset();
        const counts = await this.queueCounts();
        for (const [state, count] of Object.entries(counts)) queueJobs.set({ state }, count);
      },
    });
    const outboxPending: Gauge = new Gauge({
      name: 'provisor_outbox_pending',
      help: 'Accepted operations no worker has begun yet',
      registers: [this.registry],
      collect: async () => {
        outboxPending.set(
          await this.tx.read(() => this.operations.countBy({ status: OperationStatus.Pending }), {
            durable: false,
          }),
        );
      },
    });
    const instancesByState: Gauge = new Gauge({
      name: 'provisor_instances',
      help: 'Instances by state',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect: async () => {
        instancesByState.reset();
        const rows = await this.tx.read(
          () =>
            this.instances
              .createQueryBuilder('i')
              .select('i.state', 'state')
              .addSelect('COUNT(*)', 'count')
              .groupBy('i.state')
              .getRawMany<{ state: string; count: string | number }>(),
          { durable: false },
        );
        for (const row of rows) instancesByState.set({ state: row.state }, Number(row.count));
      },
    });
  }

  @OnEvent(INSTANCE_EVENT)
  onTransition(event: InstanceEventSignal): void {
    // instance.<action>.<phase>, instance.updated, instance.deleted
    const parts = event.type.split('.');
    const [action, outcome] = parts.length === 3 ? [parts[1], parts[2]] : ['instance', parts[1]];
    this.transitions.inc({ action, outcome });
  }

  @OnEvent(JOB_FINISHED)
  onJobFinished(job: JobFinishedSignal): void {
    this.jobDuration.observe({ action: job.action, outcome: job.outcome }, job.seconds);
  }

  private async queueCounts(): Promise<Record<string, number>> {
    if (this.queue.client.status !== 'ready') return {};
    try {
      return { ...(await withTimeout(this.queue.getJobCounts(), 1000, 'Counting jobs')) };
    } catch {
      return {};
    }
  }
}
