import { Injectable } from '@nestjs/common';
import { EventEmitter2 } from '@nestjs/event-emitter';
import { v7 as uuidv7 } from 'uuid';
import { InjectDataSource } from '@nestjs/typeorm';
import { DatabaseError } from 'pg';
import { DataSource, EntityManager, QueryFailedError } from 'typeorm';
import type { Actor } from '../auth/actor';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import {
  EntityStatements,
  Statements,
  TaggedChange,
  Where,
  execute,
} from '../database/entity-statements';
import { NotSent, StatementGroup } from '../database/statement-group';
import { EVENT_LOG_LOCK, TransactionRunner } from '../database/transaction-runner';
import { INSTANCE_EVENT, OPERATION_SCHEDULED, OperationScheduledSignal } from './domain-events';
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

/** PostgreSQL: unlocked tries of a write before it takes locks (see `write`). */
const UNLOCKED_ATTEMPTS = 3;

/** A count change adds to the owner's tally for the state, or starts it. */
const ADD_TO_COUNT =
  'ON CONFLICT (owner_id, state) DO UPDATE SET count = instance_counts.count + excluded.count';

/**
 * What one transaction wrote: what it hands to the queue once committed and announces once
 * durable.
 */
class Changes {
  readonly instanceInserts: Instance[] = [];
  /** Conditional state changes, each of which must hit its row. */
  readonly instanceUpdates: { where: Where<Instance>; set: Partial<Instance> }[] = [];
  /** Conditional removals of instances, each of which must hit its row. */
  readonly instanceDeletes: Where<Instance>[] = [];
  /** Instances whose history (transitions) goes with them. */
  readonly historyDeletes: string[] = [];
  readonly transitions: Partial<InstanceTransition>[] = [];
  readonly events: InstanceEvent[] = [];
  /** New operations (outbox rows), each with its instance as this transaction leaves it. */
  readonly operations: OperationScheduledSignal[] = [];
  /** Status changes of operations, in order; at most one per operation and transaction. */
  readonly operationUpdates: { where: Where<Operation>; set: Partial<Operation> }[] = [];
  /** Changes to `instance_counts`, by owner and state. */
  readonly counts = new Map<string, { ownerId: string; state: string; delta: number }>();

  /**
   * `unlocked`: the reads took no locks, and the writes hold only if nothing changed since.
   * `attempt` counts the unlocked tries of one write, from 0.
   */
  constructor(
    readonly unlocked = false,
    readonly attempt = 0,
  ) {}

  /**
   * The condition a change of an instance read as `read` holds on: the state is one of `from`,
   * and for an unlocked read the row is still the version read. Every change sets `updated_at`
   * (to the millisecond, as read back); the state and operation guard the rest, and a row whose
   * time carries finer precision (written outside Provisor) only ever misses, so its changes
   * take the locked path.
   */
  condition(read: Instance, from: readonly InstanceState[]): Where<Instance> {
    if (!this.unlocked) return { id: read.id, state: from };
    const state = from.includes(read.state) ? [read.state] : from;
    return { id: read.id, state, operationId: read.operationId, updatedAt: read.updatedAt };
  }

  /** The instance rows this transaction changes or removes on a condition. */
  get conditional(): number {
    return this.instanceUpdates.length + this.instanceDeletes.length;
  }

  /** The instances and operations this changes, by id: two that share one never share a statement. */
  touched(): string[] {
    const ids = new Set<string>();
    for (const instance of this.instanceInserts) ids.add(instance.id);
    for (const { where } of this.instanceUpdates) ids.add(String(where.id));
    for (const where of this.instanceDeletes) ids.add(String(where.id));
    for (const id of this.historyDeletes) ids.add(id);
    for (const transition of this.transitions) ids.add(String(transition.instanceId));
    for (const event of this.events) ids.add(event.instanceId);
    for (const { operation } of this.operations) ids.add(operation.id);
    for (const { where } of this.operationUpdates) ids.add(String(where.id));
    return [...ids];
  }

  count(ownerId: string, state: string, delta: number): void {
    const key = `${ownerId}/${state}`;
    const entry = this.counts.get(key) ?? { ownerId, state, delta: 0 };
    entry.delta += delta;
    this.counts.set(key, entry);
  }
}

/**
 * The one writer of `instances.state`. A change reads the instance's row, decides, and writes the
 * new state as an update conditional on the row being as read, which must hit exactly one row:
 * of concurrent requests exactly one wins and the others see its state. SQLite runs one writer at
 * a time; PostgreSQL stores an unlocked read's change as one statement that writes nothing if the
 * row changed meanwhile, and reads again (see `write`). The change is recorded as a transition
 * and a domain event atomically with it, and the event is emitted once the commit is durable.
 * What a change appends is written at its end, in as few statements as the database allows (see
 * `storeChanges`).
 */
@Injectable()
export class TransitionService {
  private readonly instances: EntityStatements<Instance>;
  private readonly operations: EntityStatements<Operation>;
  private readonly transitions: EntityStatements<InstanceTransition>;
  private readonly events: EntityStatements<InstanceEvent>;
  /** What a job's copy of each row must have (see `begin`). */
  private readonly columns: { operation: CopyShape; instance: CopyShape };
  /** PostgreSQL: the unlocked writes' statements, those that meet stored together (`write`). */
  private readonly group = new StatementGroup<Changes, boolean>(
    (changes) => this.storeChanges(this.dataSource.manager, changes),
    (units) => this.storeTogether(units),
    (changes) => changes.touched(),
    // Refused by the database (an error with its code), the statement rolled back. Anything
    // else (a connection lost on the way, say) leaves it unknown; one that failed before it was
    // sent throws `NotSent`.
    (error) =>
      error instanceof QueryFailedError && (error.driverError as unknown) instanceof DatabaseError,
  );

  constructor(
    private readonly tx: TransactionRunner,
    private readonly emitter: EventEmitter2,
    @InjectDataSource() private readonly dataSource: DataSource,
    statements: Statements,
  ) {
    this.instances = statements.of(Instance);
    this.operations = statements.of(Operation);
    this.transitions = statements.of(InstanceTransition);
    this.events = statements.of(InstanceEvent);
    const shape = (entity: typeof Operation | typeof Instance): CopyShape => {
      const { columns } = dataSource.getMetadata(entity);
      return {
        properties: columns.map((column) => column.propertyName),
        times: columns.filter((column) => column.type === Date).map((c) => c.propertyName),
      };
    };
    this.columns = { operation: shape(Operation), instance: shape(Instance) };
  }

  /** PostgreSQL: statements that stored more than one write, and the writes they stored. */
  get groupStats(): { groups: number; grouped: number } {
    return this.group.stats;
  }

  // ---- requests ---------------------------------------------------------------------------

  /** `requestId`: the request asking, remembered by the operation and its job's log lines. */
  async create(input: NewInstance, actor: Actor, requestId?: string): Promise<Instance> {
    const spec = INSTANCE_MACHINE[Action.Provision];
    return this.write(async (em, changes) => {
      const now = new Date();
      // Ids are version 7 UUIDs, ordered by time: an instance's and its operations' rows, and
      // their entries in the history and event indexes, land beside those of instances made at
      // about the same time, so a burst of work dirties (and a commit writes) few index pages.
      const operationId = uuidv7();
      const instance: Instance = Object.assign(new Instance(), {
        id: uuidv7(),
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
      changes.instanceInserts.push(instance);
      this.record(changes, instance, null, Action.Provision, 'scheduled', now);
      this.enqueue(changes, instance, Action.Provision, {}, now, requestId);
      return instance;
    });
  }

  async schedule(
    id: string,
    action: Exclude<Action, Action.Provision>,
    actor: Actor,
    { params = {}, requestId }: { params?: OperationParams; requestId?: string } = {},
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
      const operationId = uuidv7();
      const forced = spec.forcedFromErred && current.state === InstanceState.Erred;
      // Conditional on the state read: of concurrent requests one wins, and the others read
      // again (or, in a locked transaction, wait) and meet the winner's state.
      this.setState(changes, current, [current.state], {
        state: spec.scheduled,
        errorMessage: '',
        errorTraceback: '',
        operationId,
        updatedAt: now,
      });
      const instance = { ...current, state: spec.scheduled, errorMessage: '', errorTraceback: '' };
      Object.assign(instance, { operationId, updatedAt: now });
      this.record(changes, instance, current.state, action, 'scheduled', now);
      this.enqueue(
        changes,
        instance,
        action,
        forced ? { ...params, force: true } : params,
        now,
        requestId,
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
      if (!STABLE_STATES.includes(current.state)) throw this.notEditable(current.state);
      if (Object.keys(patch).length === 0) return current;
      const now = new Date();
      this.setState(changes, current, [current.state], { ...patch, updatedAt: now });
      const instance = { ...current, ...patch, updatedAt: now };
      this.record(changes, instance, current.state, 'update', 'instance.updated', now);
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
      this.remove(changes, current, new Date());
    });
  }

  // ---- workers ----------------------------------------------------------------------------

  /**
   * Moves the operation's instance from `*_scheduled` to in progress. A re-run (the job stalled,
   * or was sent twice) finds it in progress already and carries on. Returns null when the
   * operation no longer owns the instance; the operation is then closed as abandoned.
   *
   * `scheduled` is what the job carries: the operation and its instance as scheduling left them.
   * An unlocked write starts from it rather than reading both, and its change holds only if the
   * instance row is still that version; a re-run, or any change since, makes it read.
   *
   * The job goes on to the backend once the change is committed, without waiting for it to be
   * durable (SQLite; `write`): its `started` event is shown only once it is, and a crash that
   * loses it leaves the operation scheduled, so the job runs again, and the backend call is
   * idempotent per operation. What was committed before the job began must be durable first,
   * though (a lone action finds it so; under load the job waits for the fsync under way): a job
   * is handed to the queue at its operation's COMMIT, and no backend call may outlive a crash
   * that loses the operation. A job that stops here is answered once its outcome is durable
   * too, as Bull then records it as done.
   */
  async begin(
    operationId: string,
    scheduled?: OperationScheduledSignal,
  ): Promise<{ operation: Operation; instance: Instance } | null> {
    // Before the start, not beside it: a write that answers at COMMIT lets the job's next step
    // join the same fsync only if that step comes straight after.
    await this.tx.durable();
    const started = await this.beginWrite(operationId, scheduled);
    if (!started) await this.tx.durable();
    return started;
  }

  private beginWrite(
    operationId: string,
    scheduled?: OperationScheduledSignal,
  ): Promise<{ operation: Operation; instance: Instance } | null> {
    return this.write(
      async (em, changes) => {
        const carried =
          scheduled && changes.unlocked && changes.attempt === 0
            ? asScheduled(operationId, scheduled, this.columns)
            : null;
        const found = carried ?? (await this.readOperation(em, operationId));
        if (!found || isFinished(found.operation.status)) return null;
        const { operation, instance } = found;
        const spec = INSTANCE_MACHINE[operation.action];
        const owned =
          instance?.operationId === operation.id &&
          (instance.state === spec.scheduled || instance.state === spec.inProgress);
        if (!instance || !owned) {
          this.closeOperation(changes, operation, OperationStatus.Abandoned, '');
          return null;
        }
        if (instance.state === spec.scheduled) {
          const now = new Date();
          this.setState(changes, instance, [spec.scheduled], {
            state: spec.inProgress,
            updatedAt: now,
          });
          changes.operationUpdates.push({
            where: { id: operation.id },
            set: { status: OperationStatus.Running, updatedAt: now },
          });
          Object.assign(instance, { state: spec.inProgress, updatedAt: now });
          this.record(changes, instance, spec.scheduled, operation.action, 'started', now);
          operation.status = OperationStatus.Running;
        }
        return { operation, instance };
      },
      { awaitDurable: false },
    );
  }

  /**
   * The operation succeeded: the instance goes to its target state. `known` is the instance as
   * `begin` left it; an unlocked write starts from it rather than reading it again (its change
   * still holds only if the row is that version).
   */
  async succeed(operation: Operation, result: OperationResult, known?: Instance): Promise<void> {
    const spec = INSTANCE_MACHINE[operation.action];
    await this.write(async (em, changes) => {
      const instance = await this.ownedInProgress(em, changes, operation, false, known);
      if (!instance) return;
      const now = new Date();
      if (spec.success.kind === 'removed') {
        this.record(changes, instance, instance.state, operation.action, 'succeeded', now, {
          state: 'deleted',
        });
        this.remove(changes, instance, now);
      } else {
        const state =
          spec.success.kind === 'state'
            ? spec.success.state
            : (result.reportedState ?? instance.state);
        const set: Partial<Instance> = { state, updatedAt: now, operationId: null };
        if (result.backendId !== undefined) set.backendId = result.backendId;
        if (result.flavor !== undefined) set.flavor = result.flavor;
        this.setState(changes, instance, [spec.inProgress], set);
        this.record(
          changes,
          { ...instance, ...set },
          instance.state,
          operation.action,
          'succeeded',
          now,
        );
      }
      this.closeOperation(changes, operation, OperationStatus.Succeeded, '');
    });
  }

  /**
   * The operation failed for good: the instance goes to `erred` with the message. A forced delete
   * (scheduled from `erred`) removes the record all the same.
   */
  async fail(
    operation: Operation,
    message: string,
    traceback: string,
    known?: Instance,
  ): Promise<void> {
    await this.write(async (em, changes) => {
      const instance = await this.ownedInProgress(em, changes, operation, true, known);
      if (!instance) return;
      this.failInstance(changes, instance, operation, message, traceback, new Date());
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
        ? await this.operations.findOne(em, { id: fresh.operationId })
        : null;
      const message = `${action} has timed out.`;
      if (operation) {
        this.failInstance(changes, fresh, operation, message, '', new Date());
      } else {
        this.moveToErred(changes, fresh, action, message, '', new Date());
      }
      return true;
    });
  }

  // ---- internals --------------------------------------------------------------------------

  private failInstance(
    changes: Changes,
    instance: Instance,
    operation: Operation,
    message: string,
    traceback: string,
    now: Date,
  ): void {
    if (operation.params.force && INSTANCE_MACHINE[operation.action].success.kind === 'removed') {
      this.record(changes, instance, instance.state, operation.action, 'failed', now, {
        state: 'deleted',
        errorMessage: message,
      });
      this.remove(changes, instance, now);
    } else {
      this.moveToErred(changes, instance, operation.action, message, traceback, now);
    }
    this.closeOperation(changes, operation, OperationStatus.Failed, message);
  }

  private moveToErred(
    changes: Changes,
    instance: Instance,
    action: Action,
    message: string,
    traceback: string,
    now: Date,
  ): void {
    const set = {
      state: InstanceState.Erred,
      errorMessage: message,
      errorTraceback: traceback,
      operationId: null,
      updatedAt: now,
    };
    this.setState(changes, instance, [instance.state], set);
    this.record(changes, { ...instance, ...set }, instance.state, action, 'failed', now);
  }

  private async force(
    id: string,
    actor: Actor,
    kind: 'set_erred' | 'set_ok',
    state: InstanceState,
    message: string,
  ): Promise<Instance> {
    return this.write(async (em, changes) => {
      // Forced from any state, yet conditional on the state read: a worker's step that slips in
      // between makes this change read again (or, locked, wait) rather than be overwritten.
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
      this.setState(changes, current, [current.state], set);
      const instance = { ...current, ...set };
      this.record(changes, instance, current.state, kind, 'instance.updated', now);
      return instance;
    });
  }

  private remove(changes: Changes, instance: Instance, now: Date): void {
    changes.instanceDeletes.push(changes.condition(instance, [instance.state]));
    changes.count(instance.ownerId, instance.state, -1);
    // Its history goes with it, including any this transaction was about to store.
    changes.historyDeletes.push(instance.id);
    const kept = changes.transitions.filter((t) => t.instanceId !== instance.id);
    changes.transitions.splice(0, changes.transitions.length, ...kept);
    this.addEvent(changes, instance, 'instance.deleted', 'deleted', '', now);
  }

  /** The instance, if this operation still owns it and it is in progress (or, for a failure, scheduled). */
  private async ownedInProgress(
    em: EntityManager,
    changes: Changes,
    operation: Operation,
    orScheduled = false,
    known?: Instance,
  ): Promise<Instance | null> {
    const spec = INSTANCE_MACHINE[operation.action];
    const instance =
      known && changes.unlocked && changes.attempt === 0
        ? Object.assign(new Instance(), known)
        : await this.lockInstance(em, operation.instanceId);
    const states = orScheduled ? [spec.inProgress, spec.scheduled] : [spec.inProgress];
    if (instance && instance.operationId === operation.id && states.includes(instance.state)) {
      return instance;
    }
    this.closeOperation(changes, operation, OperationStatus.Abandoned, '');
    return null;
  }

  private closeOperation(
    changes: Changes,
    operation: Operation,
    status: OperationStatus,
    errorMessage: string,
  ): void {
    // Only an open operation closes: a second run of a finished job must not rewrite its outcome.
    changes.operationUpdates.push({
      where: { id: operation.id, status: [OperationStatus.Pending, OperationStatus.Running] },
      set: { status, errorMessage, updatedAt: new Date() },
    });
    operation.status = status;
  }

  /**
   * An operation and its instance, as `begin` needs them. Where the instance's row needs no lock
   * (an unlocked read, or SQLite) both come in one statement; a locked read on PostgreSQL reads
   * the operation, then locks the instance's row (`lockInstance`).
   */
  private async readOperation(
    em: EntityManager,
    id: string,
  ): Promise<{ operation: Operation; instance: Instance | null } | null> {
    if (this.tx.isSqlite || !inTransaction(em)) {
      const found = await this.operations.findOneWith(em, { id }, this.instances, {
        own: 'instanceId',
        other: 'id',
      });
      return found && { operation: found[0], instance: found[1] };
    }
    const operation = await this.operations.findOne(em, { id });
    return operation && { operation, instance: await this.lockInstance(em, operation.instanceId) };
  }

  /**
   * Reads an instance for a change. Inside a PostgreSQL transaction its row is locked until
   * commit, so two runs of one job (a stalled job re-sent while the first still runs) or two
   * sweepers take turns; an unlocked read's change is conditional on the row being unchanged
   * (see `write`). SQLite's write lock already serialises every write transaction.
   */
  private lockInstance(em: EntityManager, id: string): Promise<Instance | null> {
    return this.instances.findOne(em, { id }, { forUpdate: inTransaction(em) });
  }

  /**
   * A change of the instance `read`: stored with the transaction's other writes as an update
   * conditional on the state read (and, for an unlocked read, on the row being unchanged since),
   * which must hit exactly one row.
   */
  private setState(
    changes: Changes,
    read: Instance,
    from: readonly InstanceState[],
    set: Partial<Instance>,
  ): void {
    changes.instanceUpdates.push({ where: changes.condition(read, from), set });
  }

  private async findVisible(em: EntityManager, id: string, actor: Actor): Promise<Instance> {
    const instance = await this.instances.findOne(
      em,
      actor.isStaff ? { id } : { id, ownerId: actor.id },
      { forUpdate: inTransaction(em) },
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

  /** Appends the operation that owns `instance` (its `operationId`) as of this transaction. */
  private enqueue(
    changes: Changes,
    instance: Instance,
    action: Action,
    params: OperationParams,
    now: Date,
    requestId: string | undefined,
  ): void {
    const operation: Operation = Object.assign(new Operation(), {
      id: instance.operationId!,
      instanceId: instance.id,
      action,
      params,
      status: OperationStatus.Pending,
      errorMessage: '',
      requestId: requestId ?? null,
      dispatchAfter: new Date(now.getTime() + RELAY_GRACE_MS),
      createdAt: now,
      updatedAt: now,
    });
    changes.operations.push({ operation, instance: { ...instance } });
  }

  /** Appends a transition and its domain event. */
  private record(
    changes: Changes,
    instance: Instance,
    from: InstanceState | null,
    kind: TransitionKind,
    phase: 'scheduled' | 'started' | 'succeeded' | 'failed' | 'instance.updated',
    now: Date,
    event: { state?: string; errorMessage?: string } = {},
  ): void {
    if (!event.state && from !== instance.state) {
      if (from) changes.count(instance.ownerId, from, -1);
      changes.count(instance.ownerId, instance.state, 1);
    }
    if (!event.state) {
      changes.transitions.push({
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
      changes,
      instance,
      type,
      event.state ?? instance.state,
      event.errorMessage ?? instance.errorMessage,
      now,
    );
  }

  private addEvent(
    changes: Changes,
    instance: Instance,
    type: string,
    state: string,
    errorMessage: string,
    at: Date,
  ): void {
    changes.events.push(
      Object.assign(new InstanceEvent(), {
        type,
        instanceId: instance.id,
        ownerId: instance.ownerId,
        state,
        errorMessage,
        at,
      }),
    );
  }

  /**
   * Stores what a transaction changed and appended, last in the transaction: instance rows,
   * transitions, new operations (outbox rows) and their status changes, events and count changes.
   * Events go in under the event log's lock, so event ids become visible in the order they were
   * given: a reader paging with `after` never steps over an id that commits later. The counts
   * change under the same lock, so concurrent changes of one owner's counts never wait on each
   * other in opposite orders.
   */
  private async storeChanges(em: EntityManager, changes: Changes): Promise<boolean> {
    const { instanceInserts, instanceUpdates, instanceDeletes, historyDeletes } = changes;
    const { transitions, operationUpdates, events } = changes;
    const operations = changes.operations.map((scheduled) => scheduled.operation);
    const counts = [...changes.counts.values()]
      .filter((change) => change.delta !== 0)
      .map((change) => ({ ...change, tag: 0 }));
    if (this.tx.isSqlite) {
      // SQLite's single writer is the lock. One statement each; ids in the order of the rows.
      await this.instances.insert(em, instanceInserts);
      for (const { where, set } of instanceUpdates) {
        if ((await this.instances.update(em, where, set)) !== 1) throw lostUpdate(where);
      }
      for (const where of instanceDeletes) {
        if ((await this.instances.delete(em, where)) !== 1) throw lostUpdate(where);
      }
      for (const instanceId of historyDeletes) await this.transitions.delete(em, { instanceId });
      await this.transitions.insert(em, transitions);
      await this.operations.insert(em, operations);
      for (const { where, set } of operationUpdates) await this.operations.update(em, where, set);
      await this.events.insertNumbered(em, events);
      if (counts.length === 0) return true;
      await execute(
        this.dataSource,
        em,
        `INSERT INTO instance_counts (owner_id, state, count) VALUES ${counts.map(() => '(?, ?, ?)').join(', ')} ${ADD_TO_COUNT}`,
        counts.flatMap((row) => [row.ownerId, row.state, row.delta]),
      );
      return true;
    }
    // PostgreSQL: all of it in one statement. The conditional changes of instance rows come
    // first; everything else reads `ok`, which has its row only if each of them hit, so a miss
    // writes nothing. The events' insert reads from the event log's lock (taken once `ok`), and
    // the counts' from the events' (`stored`). Every data-modifying CTE runs whether read or not.
    const parameters: unknown[] = [EVENT_LOG_LOCK];
    const ctes: string[] = [];
    const checks: string[] = [];
    instanceUpdates.forEach(({ where, set }, i) => {
      ctes.push(
        `instance_update_${i} AS (${this.instances.updateInto(where, set, parameters)} RETURNING 1)`,
      );
      checks.push(`(SELECT count(*) FROM instance_update_${i}) = 1`);
    });
    instanceDeletes.forEach((where, i) => {
      ctes.push(
        `instance_delete_${i} AS (${this.instances.deleteInto(where, parameters)} RETURNING 1)`,
      );
      checks.push(`(SELECT count(*) FROM instance_delete_${i}) = 1`);
    });
    const gated = checks.length > 0;
    const answer: string[] = gated ? ['(SELECT count(*) FROM ok)::int AS ok'] : [];
    if (gated) ctes.push(`ok AS (SELECT 1 WHERE ${checks.join(' AND ')})`);
    const join = gated ? 'ok' : undefined;
    const onlyIfOk = gated ? ' AND EXISTS (SELECT 1 FROM ok)' : '';
    ctes.push(`lock AS (SELECT pg_advisory_xact_lock($1)${gated ? ' FROM ok' : ''})`);
    const stored = this.events.unnestInsert(events, parameters, {
      join: 'lock',
      returning: 'id',
    });
    if (stored) {
      ctes.push(`stored AS (${stored})`);
      answer.push('(SELECT array_agg(id ORDER BY id) FROM stored) AS ids');
    }
    const instancesSql = this.instances.unnestInsert(instanceInserts, parameters, { join });
    if (instancesSql) ctes.push(`stored_instances AS (${instancesSql})`);
    historyDeletes.forEach((instanceId, i) => {
      const history = this.transitions.deleteInto({ instanceId }, parameters);
      ctes.push(`history_delete_${i} AS (${history}${onlyIfOk})`);
    });
    const transitionsSql = this.transitions.unnestInsert(transitions, parameters, { join });
    if (transitionsSql) ctes.push(`stored_transitions AS (${transitionsSql})`);
    const operationsSql = this.operations.unnestInsert(operations, parameters, { join });
    if (operationsSql) ctes.push(`stored_operations AS (${operationsSql})`);
    operationUpdates.forEach(({ where, set }, i) => {
      const update = this.operations.updateInto(where, set, parameters);
      ctes.push(`operation_update_${i} AS (${update}${onlyIfOk})`);
    });
    if (counts.length > 0) {
      const after = stored ? 'stored' : 'lock';
      const gate = gated ? 'EXISTS (SELECT 1 FROM ok)' : 'true';
      ctes.push(countsCte(counts, parameters, after, gate));
    }
    if (ctes.length === 1) return true; // the lock alone: nothing to write
    const [row] = (
      await execute(
        this.dataSource,
        em,
        `WITH ${ctes.join(',\n')}\nSELECT ${answer.length > 0 ? answer.join(', ') : '1'}`,
        parameters,
      )
    ).rows;
    if (gated && row.ok !== 1) {
      if (changes.unlocked) return false;
      throw lostUpdate(instanceUpdates[0]?.where ?? instanceDeletes[0]);
    }
    if (stored) {
      (row.ids as (number | string)[]).forEach((id, i) => (events[i].id = Number(id)));
    }
    return true;
  }

  /**
   * PostgreSQL: stores the changes of several unlocked writes, none touching an instance another
   * touches, as one statement: what `storeChanges` does for one, set-wise over arrays, so that
   * one commit and one turn of the event log's lock serve them all, and the statement's shape
   * depends on the kinds of change it holds, not on their number. Each write's changes are
   * tagged with its index; `ok` answers the tags of the writes whose conditional change of an
   * instance hit (and of those that make none), and everything else a write stores is gated on
   * its tag being there, so a write that missed stores nothing and reads again, while the others
   * hold. Answers, for each write, whether it was stored.
   *
   * The instance rows it changes are locked first, in the order of their ids (`locked`), as
   * every such statement locks them, and so are the operations it closes: two of them, in this
   * process or another, never wait on each other's rows in opposite orders. A statement that
   * fails before it is sent throws `NotSent`, and each write is then stored alone.
   */
  private async storeTogether(units: Changes[]): Promise<boolean[]> {
    let statement: { sql: string; parameters: unknown[] };
    try {
      statement = this.togetherStatement(units);
    } catch (error) {
      throw new NotSent(error);
    }
    const [row] = (
      await execute(this.dataSource, this.dataSource.manager, statement.sql, statement.parameters)
    ).rows;
    // Stored: from here on nothing may throw. Event ids were given in the order of the events.
    const hit = new Set((row.ok as number[] | null) ?? []);
    const ids = ((row.ids as (number | string)[] | null) ?? []).values();
    return units.map((changes, tag) => {
      if (!hit.has(tag)) return false;
      for (const event of changes.events) event.id = Number(ids.next().value);
      return true;
    });
  }

  /** The statement `storeTogether` sends, and its parameters. */
  private togetherStatement(units: Changes[]): { sql: string; parameters: unknown[] } {
    // A change is gated as a whole on its one conditional change of an instance; `write` sends
    // those with more to the locked path.
    if (units.some((changes) => changes.conditional > 1)) {
      throw new Error('A write with more than one conditional change cannot share a statement');
    }
    const parameters: unknown[] = [EVENT_LOG_LOCK];
    const ctes: string[] = [];
    const oks: string[] = [];
    const tagged = <E, X>(
      pick: (changes: Changes) => X[],
      as: (x: X) => Omit<TaggedChange<E>, 'tag'>,
    ): TaggedChange<E>[] =>
      units.flatMap((changes, tag) => pick(changes).map((x) => ({ tag, ...as(x) })));
    const updates = tagged<Instance, Changes['instanceUpdates'][number]>(
      (c) => c.instanceUpdates,
      (update) => update,
    );
    const deletes = tagged<Instance, Where<Instance>>(
      (c) => c.instanceDeletes,
      (where) => ({ where }),
    );
    const rows = byId([...updates, ...deletes]);
    if (rows.length > 0) ctes.push(`locked AS (${this.instances.lockInto(rows, parameters)})`);
    byShape(updates).forEach((shape, i) => {
      const sql = this.instances.unnestUpdateInto(shape, parameters, { gate: 'locked' });
      ctes.push(`instance_update_${i} AS (${sql})`);
      oks.push(`SELECT tag FROM instance_update_${i}`);
    });
    byShape(deletes).forEach((shape, i) => {
      const sql = this.instances.unnestDeleteInto(shape, parameters, { gate: 'locked' });
      ctes.push(`instance_delete_${i} AS (${sql})`);
      oks.push(`SELECT tag FROM instance_delete_${i}`);
    });
    const free = units.flatMap((changes, tag) => (changes.conditional === 0 ? [tag] : []));
    if (free.length > 0) {
      parameters.push(free);
      oks.push(`SELECT unnest($${parameters.length}::int[]) AS tag`);
    }
    ctes.push(`ok AS (${oks.join(' UNION ALL ')})`);
    // Every conditional change has run (count) before the lock is taken: a change waiting on a
    // row another statement holds never holds the lock meanwhile.
    ctes.push(
      'lock AS (SELECT pg_advisory_xact_lock($1) FROM (SELECT count(*) AS n FROM ok) AS hit WHERE hit.n > 0)',
    );
    const gateOf = <X>(pick: (changes: Changes) => readonly X[]) => ({
      tags: units.flatMap((changes, tag) => pick(changes).map(() => tag)),
      cte: 'ok',
    });
    const events = units.flatMap((changes) => changes.events);
    const stored = this.events.unnestInsert(events, parameters, {
      join: 'lock',
      returning: 'id',
      gate: gateOf((c) => c.events),
    });
    if (stored) ctes.push(`stored AS (${stored})`);
    const instancesSql = this.instances.unnestInsert(
      units.flatMap((c) => c.instanceInserts),
      parameters,
      { gate: gateOf((c) => c.instanceInserts) },
    );
    if (instancesSql) ctes.push(`stored_instances AS (${instancesSql})`);
    const histories = tagged<InstanceTransition, string>(
      (c) => c.historyDeletes,
      (instanceId) => ({ where: { instanceId } }),
    );
    byShape(histories).forEach((shape, i) => {
      const sql = this.transitions.unnestDeleteInto(shape, parameters, { gate: 'ok' });
      ctes.push(`history_delete_${i} AS (${sql})`);
    });
    const transitionsSql = this.transitions.unnestInsert(
      units.flatMap((c) => c.transitions),
      parameters,
      { gate: gateOf((c) => c.transitions) },
    );
    if (transitionsSql) ctes.push(`stored_transitions AS (${transitionsSql})`);
    const operationsSql = this.operations.unnestInsert(
      units.flatMap((c) => c.operations.map((scheduled) => scheduled.operation)),
      parameters,
      { gate: gateOf((c) => c.operations) },
    );
    if (operationsSql) ctes.push(`stored_operations AS (${operationsSql})`);
    const operationUpdates = tagged<Operation, Changes['operationUpdates'][number]>(
      (c) => c.operationUpdates,
      (update) => update,
    );
    if (operationUpdates.length > 0) {
      // The operations of the changes that hold, locked in the order of their ids as the
      // instances are: a group that only closes operations takes no other lock.
      const sql = this.operations.lockInto(byId(operationUpdates), parameters, { gate: 'ok' });
      ctes.push(`locked_operations AS (${sql})`);
    }
    byShape(operationUpdates).forEach((shape, i) => {
      const sql = this.operations.unnestUpdateInto(shape, parameters, {
        gate: 'locked_operations',
      });
      ctes.push(`operation_update_${i} AS (${sql})`);
    });
    const counts = units.flatMap((changes, tag) =>
      [...changes.counts.values()].filter((c) => c.delta !== 0).map((c) => ({ ...c, tag })),
    );
    if (counts.length > 0) {
      ctes.push(
        countsCte(counts, parameters, stored ? 'stored' : 'lock', 'c.tag IN (SELECT tag FROM ok)'),
      );
    }
    const answer = ['(SELECT array_agg(tag) FROM ok) AS ok'];
    if (stored) answer.push('(SELECT array_agg(id ORDER BY id) FROM stored) AS ids');
    return { sql: `WITH ${ctes.join(',\n')}\nSELECT ${answer.join(', ')}`, parameters };
  }

  /**
   * Runs `work`, stores what it appended (`storeChanges`), then announces it.
   *
   * On PostgreSQL `work` first reads without a transaction or locks, and what it appended is
   * stored as one statement, conditional on each instance row it changes being as it was read:
   * one round trip, no BEGIN or COMMIT. If a row changed meanwhile nothing is written and `work`
   * runs again on fresh reads. After a few such misses, or when `work` changes more than one
   * instance row, it runs in a transaction that reads its rows locked (`FOR UPDATE`), as it
   * always does on SQLite (whose single writer is the lock).
   *
   * New operations go to the queue once committed, and events are announced once durable, each
   * in commit order (`WriteOptions`). `awaitDurable: false` answers the caller sooner on SQLite,
   * once COMMIT has run: for a job's own step, never for what answers a request.
   */
  private async write<T>(
    work: (em: EntityManager, changes: Changes) => Promise<T>,
    { awaitDurable = true } = {},
  ): Promise<T> {
    if (!this.tx.isSqlite) {
      for (let attempt = 0; attempt < UNLOCKED_ATTEMPTS; attempt++) {
        const changes = new Changes(true, attempt);
        const value = await work(this.dataSource.manager, changes);
        // Two conditional changes in one statement could half-apply: those take locks.
        if (changes.conditional > 1) break;
        if (await this.group.store(changes)) {
          this.dispatch(changes);
          this.announce(changes);
          return value;
        }
      }
    }
    const changes = new Changes();
    return this.tx.run(
      async (em) => {
        const value = await work(em, changes);
        await this.storeChanges(em, changes);
        return value;
      },
      {
        awaitDurable,
        onCommit: () => this.dispatch(changes),
        onDurable: () => this.announce(changes),
      },
    );
  }

  /** Hands new operations to the queue: once committed, durable or not (`WriteOptions`). */
  private dispatch(changes: Changes): void {
    for (const scheduled of changes.operations) this.emitter.emit(OPERATION_SCHEDULED, scheduled);
  }

  /** Shows what was written: only once it is durable. */
  private announce(changes: Changes): void {
    for (const event of changes.events) this.emitter.emit(INSTANCE_EVENT, event);
  }
}

/**
 * Copies of what a job carries, if they are an operation not yet begun and its instance in the
 * state that operation scheduled, owned by it, each with every column (`columns`) and valid
 * times; otherwise null, and the caller reads the rows (a job of another shape, or one written
 * by a release whose rows had fewer columns).
 */
function asScheduled(
  operationId: string,
  { operation, instance }: OperationScheduledSignal,
  columns: { operation: CopyShape; instance: CopyShape },
): { operation: Operation; instance: Instance } | null {
  const spec = INSTANCE_MACHINE[operation.action] as (typeof INSTANCE_MACHINE)[Action] | undefined;
  const fresh =
    operation.id === operationId &&
    operation.status === OperationStatus.Pending &&
    instance.id === operation.instanceId &&
    instance.operationId === operationId &&
    instance.state === spec?.scheduled &&
    isWhole(operation, columns.operation) &&
    isWhole(instance, columns.instance);
  if (!fresh) return null;
  return {
    operation: Object.assign(new Operation(), operation),
    instance: Object.assign(new Instance(), instance),
  };
}

/** The columns of an entity, and those of them that hold times. */
interface CopyShape {
  properties: readonly string[];
  times: readonly string[];
}

/**
 * Whether `row` has a value (null included) for each column, and a valid date for each time
 * (one the job's reader did not turn back into a date, say, leaves the copy unused).
 */
function isWhole(row: object, { properties, times }: CopyShape): boolean {
  const values = row as Record<string, unknown>;
  return (
    properties.every((property) => values[property] !== undefined) &&
    times.every((property) => {
      const value = values[property];
      return value instanceof Date && !Number.isNaN(value.getTime());
    })
  );
}

/** Whether `em` runs in a transaction, where a read may lock rows. */
function inTransaction(em: EntityManager): boolean {
  return em.queryRunner?.isTransactionActive === true;
}

/**
 * A change of an instance whose row was read under lock missed it: a bug, never a client's
 * doing. The transaction rolls back.
 */
function lostUpdate(where: Where<Instance>): Error {
  return new Error(
    `Instance ${String(where.id)} changed under a held lock; transaction rolled back`,
  );
}

/** Each change's tag and the id of the row it changes, for `lockInto`. */
function byId<E extends { id: string }>(
  changes: TaggedChange<E>[],
): { tag: number; key: string }[] {
  return changes.map(({ tag, where }) => ({ tag, key: String(where.id) }));
}

/**
 * Tagged changes by the shape of their conditions (the properties, and the values of any list
 * of more than one): each shape is one set-wise statement.
 */
function byShape<E>(changes: TaggedChange<E>[]): TaggedChange<E>[][] {
  const shapes = new Map<string, TaggedChange<E>[]>();
  for (const change of changes) {
    const key = Object.entries(change.where)
      .map(([k, v]) => (Array.isArray(v) && v.length !== 1 ? `${k}=${v.join('|')}` : k))
      .join(',');
    const shape = shapes.get(key);
    if (shape) shape.push(change);
    else shapes.set(key, [change]);
  }
  // In the order of their keys: the statement's text, and so its prepared name, depends on
  // which shapes it holds, not on the order they came in.
  return [...shapes.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, shape]) => shape);
}

/**
 * The CTE that adds changes of the counts to `instance_counts`: after `after` (the events'
 * insert, which waits for the event log's lock, or the lock itself), only where `gate` holds (a
 * condition on `c.tag`), one row per owner and state, since an upsert may not change one row
 * twice.
 */
function countsCte(
  counts: readonly { ownerId: string; state: string; delta: number; tag: number }[],
  parameters: unknown[],
  after: 'stored' | 'lock',
  gate: string,
): string {
  parameters.push(
    counts.map((c) => c.ownerId),
    counts.map((c) => c.state),
    counts.map((c) => c.delta),
    counts.map((c) => c.tag),
  );
  const n = parameters.length;
  return (
    `counted AS (INSERT INTO instance_counts (owner_id, state, count) ` +
    `SELECT c.owner_id, c.state, sum(c.delta)::int ` +
    `FROM lock, ${after === 'stored' ? '(SELECT count(*) FROM stored) AS done, ' : ''}` +
    `unnest($${n - 3}::uuid[], $${n - 2}::varchar[], $${n - 1}::int[], $${n}::int[]) ` +
    `AS c(owner_id, state, delta, tag) WHERE ${gate} ` +
    `GROUP BY c.owner_id, c.state HAVING sum(c.delta) <> 0 ${ADD_TO_COUNT})`
  );
}
