import { Injectable } from '@nestjs/common';
import { EventEmitter2 } from '@nestjs/event-emitter';
import { randomUUID } from 'node:crypto';
import { EntityManager, In } from 'typeorm';
import type { Actor } from '../auth/actor';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import { TransactionRunner } from '../database/transaction-runner';
import { RequestContext } from '../logging/request-context';
import { INSTANCE_EVENT, OPERATION_SCHEDULED } from './domain-events';
import { InstanceEvent } from './instance-event.entity';
import { InstanceTransition } from './instance-transition.entity';
import { Instance } from './instance.entity';
import { Action, INSTANCE_MACHINE, InstanceState, STABLE_STATES } from './instance.machine';
import {
  Operation,
  OperationParams,
  OperationStatus,
  RELAY_GRACE_MS,
  isFinished,
} from './operation.entity';

export interface NewInstance {
  name: string;
  description: string;
  flavor: string;
  image: string;
}

export interface InstancePatch {
  name?: string;
  description?: string;
}

/** What a backend operation found or made, applied on success. */
export interface OperationResult {
  backendId?: string;
  flavor?: string;
  /** pull: the state the backend reports. */
  reportedState?: InstanceState.Online | InstanceState.Offline;
}

type TransitionKind = InstanceTransition['action'];

/** What one transaction wrote and must announce once it has committed. */
class Changes {
  readonly events: InstanceEvent[] = [];
  readonly operations: Operation[] = [];
  /** Changes to `instance_counts`, by owner and state. */
  readonly counts = new Map<string, { ownerId: string; state: string; delta: number }>();

  count(ownerId: string, state: string, delta: number): void {
    const key = `${ownerId}/${state}`;
    const entry = this.counts.get(key) ?? { ownerId, state, delta: 0 };
    entry.delta += delta;
    this.counts.set(key, entry);
  }
}

/**
 * The one writer of `instances.state`. Every change is a conditional update that must hit exactly
 * one row, so of concurrent requests exactly one wins; it is recorded as a transition and a
 * domain event in the same transaction, and the event is emitted after commit.
 */
@Injectable()
export class TransitionService {
  constructor(
    private readonly tx: TransactionRunner,
    private readonly emitter: EventEmitter2,
  ) {}

  // ---- requests ---------------------------------------------------------------------------

  async create(input: NewInstance, actor: Actor): Promise<Instance> {
    const spec = INSTANCE_MACHINE[Action.Provision];
    return this.write(async (em, changes) => {
      const now = new Date();
      const operationId = randomUUID();
      const instance = em.create(Instance, {
        id: randomUUID(),
        ...input,
        state: spec.scheduled,
        errorMessage: '',
        errorTraceback: '',
        backendId: '',
        ownerId: actor.id,
        operationId,
        createdAt: now,
        updatedAt: now,
      });
      await em.insert(Instance, instance);
      await this.record(em, changes, instance, null, Action.Provision, 'scheduled', now);
      await this.enqueue(em, changes, instance.id, operationId, Action.Provision, {}, now);
      return instance;
    });
  }

  async schedule(
    id: string,
    action: Exclude<Action, Action.Provision>,
    actor: Actor,
    params: OperationParams = {},
  ): Promise<Instance> {
    const spec = INSTANCE_MACHINE[action];
    return this.write(async (em, changes) => {
      const current = await this.findVisible(em, id, actor);
      if (!spec.from.includes(current.state)) throw this.invalid(action, current.state, spec.from);
      if (spec.needsBackendId && !current.backendId) {
        throw new DomainError(
          DomainErrorCode.BadRequest,
          `Cannot ${action} instance: it has no backend_id (it was never provisioned)`,
        );
      }
      const now = new Date();
      const operationId = randomUUID();
      const forced = spec.forcedFromErred && current.state === InstanceState.Erred;
      const won = await this.compareAndSet(em, id, [current.state], {
        state: spec.scheduled,
        errorMessage: '',
        errorTraceback: '',
        operationId,
        updatedAt: now,
      });
      // Another request changed the state between the read and the update: it won.
      if (!won) throw await this.conflict(em, id, action, spec.from);
      const instance = { ...current, state: spec.scheduled, errorMessage: '', errorTraceback: '' };
      Object.assign(instance, { operationId, updatedAt: now });
      await this.record(em, changes, instance, current.state, action, 'scheduled', now);
      await this.enqueue(
        em,
        changes,
        id,
        operationId,
        action,
        forced ? { ...params, force: true } : params,
        now,
      );
      return instance;
    });
  }

  async update(id: string, fields: InstancePatch, actor: Actor): Promise<Instance> {
    // Only what the client sent; an absent field keeps its value.
    const patch = Object.fromEntries(
      Object.entries(fields).filter(([, value]) => value !== undefined),
    ) as InstancePatch;
    return this.write(async (em, changes) => {
      const current = await this.findVisible(em, id, actor);
      if (Object.keys(patch).length === 0) {
        if (!STABLE_STATES.includes(current.state)) throw this.notEditable(current.state);
        return current;
      }
      const now = new Date();
      const won = await this.compareAndSet(em, id, STABLE_STATES, { ...patch, updatedAt: now });
      if (!won) {
        throw this.notEditable((await this.findVisible(em, id, actor)).state);
      }
      const instance = { ...current, ...patch, updatedAt: now };
      await this.record(em, changes, instance, current.state, 'update', 'instance.updated', now);
      return instance;
    });
  }

  /** Staff: force `erred` from any state, without the backend. */
  async setErred(id: string, message: string, actor: Actor): Promise<Instance> {
    return this.force(id, actor, 'set_erred', InstanceState.Erred, message);
  }

  /** Staff: force `online` or `offline` from any state, without the backend. */
  async setOk(
    id: string,
    state: InstanceState.Online | InstanceState.Offline,
    actor: Actor,
  ): Promise<Instance> {
    return this.force(id, actor, 'set_ok', state, '');
  }

  /** Staff: remove the record without touching the backend. */
  async unlink(id: string, actor: Actor): Promise<void> {
    await this.write(async (em, changes) => {
      const current = await this.findVisible(em, id, actor);
      await this.remove(em, changes, current, new Date());
    });
  }

  // ---- workers ----------------------------------------------------------------------------

  /**
   * Moves the operation's instance from `*_scheduled` to in progress. A re-run (the job stalled,
   * or was sent twice) finds it in progress already and carries on. Returns null when the
   * operation no longer owns the instance; the operation is then closed as abandoned.
   */
  async begin(operationId: string): Promise<{ operation: Operation; instance: Instance } | null> {
    return this.write(async (em, changes) => {
      const operation = await em.findOneBy(Operation, { id: operationId });
      if (!operation || isFinished(operation.status)) return null;
      const spec = INSTANCE_MACHINE[operation.action];
      const instance = await this.lockInstance(em, operation.instanceId);
      const owned =
        instance?.operationId === operation.id &&
        (instance.state === spec.scheduled || instance.state === spec.inProgress);
      if (!instance || !owned) {
        await this.closeOperation(em, operation, OperationStatus.Abandoned, '');
        return null;
      }
      if (instance.state === spec.scheduled) {
        const now = new Date();
        await this.compareAndSet(em, instance.id, [spec.scheduled], {
          state: spec.inProgress,
          updatedAt: now,
        });
        await em.update(
          Operation,
          { id: operation.id },
          { status: OperationStatus.Running, updatedAt: now },
        );
        Object.assign(instance, { state: spec.inProgress, updatedAt: now });
        await this.record(em, changes, instance, spec.scheduled, operation.action, 'started', now);
        operation.status = OperationStatus.Running;
      }
      return { operation, instance };
    });
  }

  async succeed(operation: Operation, result: OperationResult): Promise<void> {
    const spec = INSTANCE_MACHINE[operation.action];
    await this.write(async (em, changes) => {
      const instance = await this.ownedInProgress(em, operation);
      if (!instance) return;
      const now = new Date();
      if (spec.success.kind === 'removed') {
        await this.record(
          em,
          changes,
          instance,
          instance.state,
          operation.action,
          'succeeded',
          now,
          {
            state: 'deleted',
          },
        );
        await this.remove(em, changes, instance, now);
      } else {
        const state =
          spec.success.kind === 'state'
            ? spec.success.state
            : (result.reportedState ?? instance.state);
        const set: Partial<Instance> = { state, updatedAt: now, operationId: null };
        if (result.backendId !== undefined) set.backendId = result.backendId;
        if (result.flavor !== undefined) set.flavor = result.flavor;
        await this.compareAndSet(em, instance.id, [spec.inProgress], set);
        await this.record(
          em,
          changes,
          { ...instance, ...set },
          instance.state,
          operation.action,
          'succeeded',
          now,
        );
      }
      await this.closeOperation(em, operation, OperationStatus.Succeeded, '');
    });
  }

  /**
   * The operation failed for good: the instance goes to `erred` with the message. A forced delete
   * (scheduled from `erred`) removes the record all the same.
   */
  async fail(operation: Operation, message: string, traceback: string): Promise<void> {
    await this.write(async (em, changes) => {
      const instance = await this.ownedInProgress(em, operation, true);
      if (!instance) return;
      await this.failInstance(em, changes, instance, operation, message, traceback, new Date());
    });
  }

  /**
   * An instance stuck in a transitional state with no live job goes to `erred` with
   * "<action> has timed out.". Returns false if it moved on meanwhile.
   */
  async sweep(instance: Instance, action: Action): Promise<boolean> {
    return this.write(async (em, changes) => {
      const fresh = await this.lockInstance(em, instance.id);
      if (
        !fresh ||
        fresh.state !== instance.state ||
        fresh.updatedAt.getTime() !== instance.updatedAt.getTime()
      ) {
        return false;
      }
      const operation = fresh.operationId
        ? await em.findOneBy(Operation, { id: fresh.operationId })
        : null;
      const message = `${action} has timed out.`;
      if (operation) {
        await this.failInstance(em, changes, fresh, operation, message, '', new Date());
      } else {
        await this.moveToErred(em, changes, fresh, action, message, '', new Date());
      }
      return true;
    });
  }

  // ---- internals --------------------------------------------------------------------------

  private async failInstance(
    em: EntityManager,
    changes: Changes,
    instance: Instance,
    operation: Operation,
    message: string,
    traceback: string,
    now: Date,
  ): Promise<void> {
    if (operation.params.force && INSTANCE_MACHINE[operation.action].success.kind === 'removed') {
      await this.record(em, changes, instance, instance.state, operation.action, 'failed', now, {
        state: 'deleted',
        errorMessage: message,
      });
      await this.remove(em, changes, instance, now);
    } else {
      await this.moveToErred(em, changes, instance, operation.action, message, traceback, now);
    }
    await this.closeOperation(em, operation, OperationStatus.Failed, message);
  }

  private async moveToErred(
    em: EntityManager,
    changes: Changes,
    instance: Instance,
    action: Action,
    message: string,
    traceback: string,
    now: Date,
  ): Promise<void> {
    const set = {
      state: InstanceState.Erred,
      errorMessage: message,
      errorTraceback: traceback,
      operationId: null,
      updatedAt: now,
    };
    await this.compareAndSet(em, instance.id, [instance.state], set);
    await this.record(em, changes, { ...instance, ...set }, instance.state, action, 'failed', now);
  }

  private async force(
    id: string,
    actor: Actor,
    kind: 'set_erred' | 'set_ok',
    state: InstanceState,
    message: string,
  ): Promise<Instance> {
    return this.write(async (em, changes) => {
      // Forced from any state: the row lock keeps a worker's step from slipping in between.
      const current = actor.isStaff ? await this.lockInstance(em, id) : null;
      if (!current) throw DomainError.notFound('Instance');
      const now = new Date();
      const set = {
        state,
        errorMessage: message,
        errorTraceback: '',
        operationId: null,
        updatedAt: now,
      };
      await this.compareAndSet(em, id, [current.state], set);
      const instance = { ...current, ...set };
      await this.record(em, changes, instance, current.state, kind, 'instance.updated', now);
      return instance;
    });
  }

  private async remove(em: EntityManager, changes: Changes, instance: Instance, now: Date) {
    await em.delete(Instance, { id: instance.id });
    changes.count(instance.ownerId, instance.state, -1);
    await em.delete(InstanceTransition, { instanceId: instance.id });
    this.addEvent(em, changes, instance, 'instance.deleted', 'deleted', '', now);
  }

  /** The instance, if this operation still owns it and it is in progress (or, for a failure, scheduled). */
  private async ownedInProgress(
    em: EntityManager,
    operation: Operation,
    orScheduled = false,
  ): Promise<Instance | null> {
    const spec = INSTANCE_MACHINE[operation.action];
    const instance = await this.lockInstance(em, operation.instanceId);
    const states = orScheduled ? [spec.inProgress, spec.scheduled] : [spec.inProgress];
    if (instance && instance.operationId === operation.id && states.includes(instance.state)) {
      return instance;
    }
    await this.closeOperation(em, operation, OperationStatus.Abandoned, '');
    return null;
  }

  private async closeOperation(
    em: EntityManager,
    operation: Operation,
    status: OperationStatus,
    errorMessage: string,
  ): Promise<void> {
    // Only an open operation closes: a second run of a finished job must not rewrite its outcome.
    await em.update(
      Operation,
      { id: operation.id, status: In([OperationStatus.Pending, OperationStatus.Running]) },
      { status, errorMessage, updatedAt: new Date() },
    );
    operation.status = status;
  }

  /**
   * Reads an instance for a worker-side change and, on PostgreSQL, locks its row until commit, so
   * two runs of one job (a stalled job re-sent while the first still runs) or two sweepers take
   * turns. SQLite's write lock already serialises every write transaction.
   */
  private lockInstance(em: EntityManager, id: string): Promise<Instance | null> {
    return em.findOne(Instance, {
      where: { id },
      lock: this.tx.isSqlite ? undefined : { mode: 'pessimistic_write' },
    });
  }

  private async compareAndSet(
    em: EntityManager,
    id: string,
    from: readonly InstanceState[],
    set: Partial<Instance>,
  ): Promise<boolean> {
    const result = await em
      .createQueryBuilder()
      .update(Instance)
      .set(set)
      .where('id = :id', { id })
      .andWhere('state IN (:...from)', { from })
      .execute();
    return result.affected === 1;
  }

  private async findVisible(em: EntityManager, id: string, actor: Actor): Promise<Instance> {
    const instance = await em.findOneBy(
      Instance,
      actor.isStaff ? { id } : { id, ownerId: actor.id },
    );
    if (!instance) throw DomainError.notFound('Instance');
    return instance;
  }

  private notEditable(state: InstanceState): DomainError {
    return new DomainError(
      DomainErrorCode.InvalidTransition,
      `Cannot update instance in state '${state}'; allowed from: ${STABLE_STATES.join(', ')}`,
    );
  }

  private invalid(action: string, state: InstanceState, from: readonly InstanceState[]) {
    return new DomainError(
      DomainErrorCode.InvalidTransition,
      `Cannot ${action} instance in state '${state}'; allowed from: ${from.join(', ')}`,
    );
  }

  private async conflict(
    em: EntityManager,
    id: string,
    action: string,
    from: readonly InstanceState[],
  ) {
    const now = await em.findOneBy(Instance, { id });
    if (!now) return DomainError.notFound('Instance');
    return this.invalid(action, now.state, from);
  }

  private async enqueue(
    em: EntityManager,
    changes: Changes,
    instanceId: string,
    id: string,
    action: Action,
    params: OperationParams,
    now: Date,
  ): Promise<void> {
    const operation = em.create(Operation, {
      id,
      instanceId,
      action,
      params,
      status: OperationStatus.Pending,
      errorMessage: '',
      requestId: RequestContext.requestId() || null,
      dispatchAfter: new Date(now.getTime() + RELAY_GRACE_MS),
      createdAt: now,
      updatedAt: now,
    });
    await em.insert(Operation, operation);
    changes.operations.push(operation);
  }

  /** Appends a transition and its domain event. */
  private async record(
    em: EntityManager,
    changes: Changes,
    instance: Instance,
    from: InstanceState | null,
    kind: TransitionKind,
    phase: 'scheduled' | 'started' | 'succeeded' | 'failed' | 'instance.updated',
    now: Date,
    event: { state?: string; errorMessage?: string } = {},
  ): Promise<void> {
    if (!event.state && from !== instance.state) {
      if (from) changes.count(instance.ownerId, from, -1);
      changes.count(instance.ownerId, instance.state, 1);
    }
    if (!event.state) {
      await em.insert(InstanceTransition, {
        instanceId: instance.id,
        action: kind,
        fromState: from,
        toState: instance.state,
        errorMessage: instance.errorMessage,
        at: now,
      });
    }
    const type = phase === 'instance.updated' ? phase : `instance.${kind}.${phase}`;
    this.addEvent(
      em,
      changes,
      instance,
      type,
      event.state ?? instance.state,
      event.errorMessage ?? instance.errorMessage,
      now,
    );
  }

  private addEvent(
    em: EntityManager,
    changes: Changes,
    instance: Instance,
    type: string,
    state: string,
    errorMessage: string,
    at: Date,
  ): void {
    changes.events.push(
      em.create(InstanceEvent, {
        type,
        instanceId: instance.id,
        ownerId: instance.ownerId,
        state,
        errorMessage,
        at,
      }),
    );
  }

  /** One statement for all of a transaction's count changes (a multi-row upsert). */
  private async applyCounts(em: EntityManager, changes: Changes): Promise<void> {
    const rows = [...changes.counts.values()].filter((change) => change.delta !== 0);
    if (rows.length === 0) return;
    const values = rows.map((_, i) =>
      this.tx.isSqlite ? '(?, ?, ?)' : `($${3 * i + 1}, $${3 * i + 2}, $${3 * i + 3})`,
    );
    await em.query(
      `INSERT INTO instance_counts (owner_id, state, count) VALUES ${values.join(', ')} ` +
        'ON CONFLICT (owner_id, state) DO UPDATE SET count = instance_counts.count + excluded.count',
      rows.flatMap((row) => [row.ownerId, row.state, row.delta]),
    );
  }

  /**
   * Runs a write transaction, then announces what it wrote. Its events are stored last, under the
   * event log's lock, so event ids become visible in the order they were given: a reader paging
   * with `after` never steps over an id that commits later.
   */
  private async write<T>(work: (em: EntityManager, changes: Changes) => Promise<T>): Promise<T> {
    const changes = new Changes();
    const result = await this.tx.run(async (em) => {
      const value = await work(em, changes);
      if (changes.events.length > 0) {
        await this.tx.lockEventLog(em);
        // One statement: ids are given in the order of the rows.
        await em.insert(InstanceEvent, changes.events);
        // Under the event log's lock, so that concurrent changes of one owner's counts never
        // wait on each other in opposite orders.
        await this.applyCounts(em, changes);
      }
      return value;
    });
    for (const event of changes.events) this.emitter.emit(INSTANCE_EVENT, event);
    for (const operation of changes.operations) this.emitter.emit(OPERATION_SCHEDULED, operation);
    return result;
  }
}
