import { Column, Entity, PrimaryColumn } from 'typeorm';
import { Action } from './instance.machine';

export enum OperationStatus {
  /** Recorded with the `*_scheduled` state; not yet begun by a worker. */
  Pending = 'pending',
  Running = 'running',
  Succeeded = 'succeeded',
  Failed = 'failed',
  /** The instance left the operation's states before a worker took it (staff forced a state). */
  Abandoned = 'abandoned',
}

/** Grace before the relay re-sends a row the request path already handed to the queue. */
export const RELAY_GRACE_MS = 5_000;

export interface OperationParams {
  /** resize: the new flavor. */
  flavor?: string;
  /** delete from `erred`: remove the record even if the backend delete fails. */
  force?: boolean;
}

/**
 * The outbox: one row per accepted operation, written in the same transaction as the
 * `*_scheduled` state. Its id is the Bull job id, so handing it over twice is harmless.
 */
@Entity('operations')
export class Operation {
  @PrimaryColumn('uuid')
  id: string;

  @Column('uuid', { name: 'instance_id' })
  instanceId: string;

  @Column('varchar')
  action: Action;

  @Column('simple-json')
  params: OperationParams;

  @Column('varchar')
  status: OperationStatus;

  @Column('text', { name: 'error_message' })
  errorMessage: string;

  /** The request that asked for it, so its job's logs lead back to it. */
  @Column('varchar', { name: 'request_id', nullable: true })
  requestId: string | null;

  /** When the relay should (re)send a still-pending row to the queue. */
  @Column({ name: 'dispatch_after' })
  dispatchAfter: Date;

  @Column({ name: 'created_at' })
  createdAt: Date;

  @Column({ name: 'updated_at' })
  updatedAt: Date;
}

export function isFinished(status: OperationStatus): boolean {
  return (
    status === OperationStatus.Succeeded ||
    status === OperationStatus.Failed ||
    status === OperationStatus.Abandoned
  );
}
