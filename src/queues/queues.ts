import type { Job, JobOptions } from 'bull';
import type { AppConfig } from '../config/app-config';
import type { OperationScheduledSignal } from '../state-machine/domain-events';
import type { Action } from '../state-machine/instance.machine';

/** Every queue Provisor has. */
export enum QueueName {
  InstanceOperations = 'instance-operations',
}

/** Job names are the actions of the state machine, so the dashboard reads as the API does. */
export type InstanceJobName = Action;

/** The payload of an instance operation job; its job id is the operation id too. */
export interface InstanceJobData {
  operationId: string;
  instanceId: string;
  /** The request that scheduled it: for the logs. */
  requestId?: string;
  /**
   * The operation and its instance as the scheduling transaction left them, from the request
   * path; the worker's first step starts from them rather than reading both (see
   * `TransitionService.begin`). Jobs the relay re-sends carry none. Times are ISO strings here,
   * as Bull stores data as JSON: read it with `scheduledOf`.
   */
  scheduled?: OperationScheduledSignal;
}

/** `data.scheduled` with its times as dates again, or undefined. */
export function scheduledOf(data: InstanceJobData): OperationScheduledSignal | undefined {
  if (!data.scheduled) return undefined;
  const { operation, instance } = data.scheduled;
  return {
    operation: {
      ...operation,
      dispatchAfter: new Date(operation.dispatchAfter),
      createdAt: new Date(operation.createdAt),
      updatedAt: new Date(operation.updatedAt),
    },
    instance: {
      ...instance,
      createdAt: new Date(instance.createdAt),
      updatedAt: new Date(instance.updatedAt),
    },
  };
}

/**
 * A job Provisor added always carries its operation id. What a Redis restarted empty can hold
 * under a job id without one is the remnant of a command queued during the outage: no job, but
 * Bull takes the key for one and would not add it again.
 */
export function isRemnant(job: Job<Partial<InstanceJobData>>): boolean {
  return !job.data?.operationId;
}

/** Default options of instance operation jobs, from config. */
export function instanceJobOptions(config: AppConfig): JobOptions {
  return {
    attempts: config.jobAttempts,
    backoff: { type: 'exponential', delay: config.jobBackoffMs },
    removeOnComplete: { age: 24 * 3600, count: 5000 },
    removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
  };
}

/** Emitted in-process when a worker finishes a job run, for metrics. */
export const JOB_FINISHED = 'job.finished';

export interface JobFinishedSignal {
  action: Action;
  /** succeeded, failed, retried (a transient error, Bull will run it again) or skipped. */
  outcome: 'succeeded' | 'failed' | 'retried' | 'skipped';
  seconds: number;
}
