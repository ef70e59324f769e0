import type { InstanceEvent } from './instance-event.entity';
import type { Instance } from './instance.entity';
import type { Operation } from './operation.entity';

/**
 * In-process signals of what a transaction wrote: `INSTANCE_EVENT` once its commit is durable,
 * in commit order; `OPERATION_SCHEDULED` once it has committed, which may be before (SQLite's
 * fsync runs after COMMIT): a crash that loses the operation's row leaves its job nothing to
 * run. Listeners must treat them as hints: the stored rows are the truth (the outbox relay
 * covers a lost `OPERATION_SCHEDULED`, the event log a lost `INSTANCE_EVENT`).
 */
export const INSTANCE_EVENT = 'instance.event';
export const OPERATION_SCHEDULED = 'operation.scheduled';

export type InstanceEventSignal = InstanceEvent;
/** A new operation, and its instance as the scheduling transaction left it. */
export interface OperationScheduledSignal {
  operation: Operation;
  instance: Instance;
}
