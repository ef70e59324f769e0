import type { InstanceEvent } from './instance-event.entity';
import type { Instance } from './instance.entity';
import type { Operation } from './operation.entity';

/**
 * In-process signals, emitted after the transaction that wrote them has committed. Listeners
 * must treat them as hints: the stored rows are the truth (the outbox relay covers a lost
 * `OPERATION_SCHEDULED`, the event log a lost `INSTANCE_EVENT`).
 */
export const INSTANCE_EVENT = 'instance.event';
export const OPERATION_SCHEDULED = 'operation.scheduled';

export type InstanceEventSignal = InstanceEvent;
/** A new operation, and its instance as the scheduling transaction left it. */
export interface OperationScheduledSignal {
  operation: Operation;
  instance: Instance;
}
