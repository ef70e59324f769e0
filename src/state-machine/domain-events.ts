import type { InstanceEvent } from './instance-event.entity';
import type { Operation } from './operation.entity';

/**
 * In-process signals, emitted after the transaction that wrote them has committed. Listeners
 * must treat them as hints: the stored rows are the truth (the outbox relay covers a lost
 * `OPERATION_SCHEDULED`, the event log a lost `INSTANCE_EVENT`).
 */
export const INSTANCE_EVENT = 'instance.event';
export const OPERATION_SCHEDULED = 'operation.scheduled';

export type InstanceEventSignal = InstanceEvent;
export type OperationScheduledSignal = Operation;
