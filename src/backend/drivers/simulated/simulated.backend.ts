import { Injectable } from '@nestjs/common';
import { v7 as uuidv7 } from 'uuid';
import { setTimeout as sleep } from 'node:timers/promises';
import { InjectDataSource } from '@nestjs/typeorm';
import { DataSource, EntityManager } from 'typeorm';
import { AppConfig } from '../../../config/app-config';
import { EntityStatements, Statements } from '../../../database/entity-statements';
import { TransactionRunner } from '../../../database/transaction-runner';
import {
  BackendError,
  CloudBackend,
  OperationContext,
  VmPowerState,
  VmSpec,
} from '../../cloud-backend';
import { SimFaultsService } from './sim-faults.service';
import { SimOperation } from './sim-fault.entity';
import { SimVm } from './sim-vm.entity';

/**
 * The simulated cloud's writes answer once committed, not once durable (`WriteOptions`). Its VMs
 * live in Provisor's own database, whose log is written in commit order: the commit that records
 * an operation's outcome, which Provisor waits on before anyone is told, makes the cloud's change
 * durable too. A crash before it loses both, and the operation runs again.
 */
const CLOUD_WRITE = { awaitDurable: false } as const;

/** The most VMs a process keeps as it last knew them (some hundred bytes each). */
const KNOWN_VMS = 10_000;

/** `applyKnown` made the change. */
const APPLIED = Symbol('applied');

/** A read of a VM (null if there is none) with the fault check beside it (true or 1 if armed). */
interface Looked {
  row: SimVm | null;
  beside: unknown;
}

/**
 * A fake cloud that keeps its VMs in the database (tables of its own), so they survive a restart
 * and every process sees the same cloud. Each operation takes `SIM_LATENCY_MS`, obeys armed
 * faults, and is idempotent per operation id.
 */
@Injectable()
export class SimulatedBackend implements CloudBackend {
  private readonly statements: EntityStatements<SimVm>;
  /**
   * VMs as this process last read or wrote them, least recently used first: a change starts
   * from one of these without reading the VM first (`applyKnown`).
   */
  private readonly known = new Map<string, SimVm>();

  constructor(
    private readonly tx: TransactionRunner,
    private readonly faults: SimFaultsService,
    private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
    statements: Statements,
  ) {
    this.statements = statements.of(SimVm);
  }

  async provision(ctx: OperationContext, spec: VmSpec): Promise<{ backendId: string }> {
    const made = (): SimVm => {
      const now = new Date();
      return {
        backendId: `sim-${uuidv7()}`,
        instanceId: ctx.instanceId,
        ...spec,
        state: 'online',
        lastOperationId: ctx.operationId,
        opCounts: { provision: 1 },
        createdAt: now,
        updatedAt: now,
      };
    };
    // Most runs are a first run with no fault armed: one statement makes the VM.
    await this.elapse(ctx, 'provision');
    const first = made();
    const inserted = await this.tx.runUnlocked((em) => {
      this.stillWanted(ctx, 'provision');
      return this.statements.insertUnless(em, first, ['instanceId'], (parameters) =>
        this.faults.armedInto('provision', parameters),
      );
    }, CLOUD_WRITE);
    if (inserted) return { backendId: this.remember(first).backendId };
    // One VM per instance: a re-run of provisioning finds the VM it made.
    const existing = await this.lookUp(ctx, 'provision', { instanceId: ctx.instanceId });
    if (existing) return { backendId: existing.backendId };
    return this.tx.runUnlocked(async (em) => {
      this.stillWanted(ctx, 'provision');
      const vm = made();
      if (await this.statements.insertIfAbsent(em, vm, ['instanceId'])) {
        return { backendId: this.remember(vm).backendId };
      }
      // A run of the same operation beside this one made it first.
      const other = await this.statements.findOne(em, { instanceId: ctx.instanceId });
      return { backendId: other!.backendId };
    }, CLOUD_WRITE);
  }

  start(ctx: OperationContext, backendId: string): Promise<void> {
    return this.mutate(ctx, 'start', backendId, (vm) => {
      if (vm.state === 'online') return false;
      vm.state = 'online';
      return true;
    });
  }

  stop(ctx: OperationContext, backendId: string): Promise<void> {
    return this.mutate(ctx, 'stop', backendId, (vm) => {
      if (vm.state === 'offline') return false;
      vm.state = 'offline';
      return true;
    });
  }

  restart(ctx: OperationContext, backendId: string): Promise<void> {
    return this.mutate(ctx, 'restart', backendId, (vm) => {
      if (vm.state !== 'online') {
        throw new BackendError(`simulated backend error: VM ${backendId} is not running`, false);
      }
      return true;
    });
  }

  resize(ctx: OperationContext, backendId: string, flavor: string): Promise<void> {
    return this.mutate(ctx, 'resize', backendId, (vm) => {
      if (vm.state !== 'offline') {
        throw new BackendError(
          `simulated backend error: VM ${backendId} must be stopped to resize`,
          false,
        );
      }
      if (vm.flavor === flavor) return false;
      vm.flavor = flavor;
      return true;
    });
  }

  async delete(ctx: OperationContext, backendId: string): Promise<void> {
    const remove = (vm: SimVm) => {
      vm.state = 'deleted';
      return true;
    };
    await this.elapse(ctx, 'delete');
    const known = await this.applyKnown(ctx, 'delete', backendId, remove);
    if (known === APPLIED) return;
    const read = await this.readVm(ctx, 'delete', backendId, known);
    await this.applyOnce(ctx, 'delete', async (em) => {
      const vm = await read(em);
      if (!vm || vm.state === 'deleted') return true;
      return this.saved(em, vm, this.changeOf(vm, remove(vm), ctx, 'delete'));
    });
  }

  async describe(
    ctx: OperationContext,
    backendId: string,
  ): Promise<{ state: VmPowerState } | null> {
    await this.elapse(ctx, 'pull');
    await this.meetFaults(ctx, 'pull');
    // Like every read outside a transaction, kept out of a write group (`TransactionRunner.read`);
    // the simulated cloud's own records need not wait for Provisor's disk.
    const vm = await this.tx.read(
      () => this.statements.findOne(this.dataSource.manager, { backendId }),
      { durable: false },
    );
    return vm && vm.state !== 'deleted' ? { state: vm.state } : null;
  }

  /**
   * The full path of an operation on an existing VM, whose first read of the VM comes with the
   * fault check in one statement (or is the one a missed `applyKnown` made). Answers the VM's
   * read for `applyOnce`: that first read on the first try (its change is conditional on the VM
   * being as read, so a VM changed since is only read again), a fresh one on each later try.
   */
  private async readVm(
    ctx: OperationContext,
    operation: SimOperation,
    backendId: string,
    missed: Looked | null,
  ): Promise<(em: EntityManager) => Promise<SimVm | null>> {
    let first: SimVm | null | undefined = missed
      ? await this.met(ctx, operation, missed)
      : await this.lookUp(ctx, operation, { backendId });
    return async (em) => {
      const vm = first !== undefined ? first : await this.statements.findOne(em, { backendId });
      first = undefined;
      return vm;
    };
  }

  /**
   * Reads the VM matching `where` with the fault check beside it, in one statement, then meets
   * the faults the check found (`met`).
   */
  private async lookUp(
    ctx: OperationContext,
    operation: SimOperation,
    where: Partial<SimVm>,
  ): Promise<SimVm | null> {
    const looked = await this.tx.read(
      () =>
        this.statements.findOneBeside(this.dataSource.manager, where, (parameters) =>
          this.faults.armedInto(operation, parameters),
        ),
      { durable: false },
    );
    return this.met(ctx, operation, looked);
  }

  /** Meets the faults a read's check found, and keeps the VM it read as known; answers the VM. */
  private async met(
    ctx: OperationContext,
    operation: SimOperation,
    { row, beside }: Looked,
  ): Promise<SimVm | null> {
    // true on PostgreSQL, 1 on SQLite.
    await this.meetFaults(ctx, operation, beside === true || beside === 1);
    if (row) this.remember(row);
    return row;
  }

  /** Throws (or hangs) as the first armed fault that matches says, if there is one. */
  private async meetFaults(
    ctx: OperationContext,
    operation: SimOperation,
    armed?: boolean,
  ): Promise<void> {
    const fault = await this.faults.consume(operation, ctx.instanceId, armed);
    if (fault?.mode === 'hang') {
      await sleep(2 ** 31 - 1, undefined, { signal: ctx.signal }).catch(() => undefined);
      throw new BackendError(`simulated backend error: ${operation} did not answer`, false);
    }
    if (fault) {
      throw new BackendError(
        `simulated backend error: ${fault.message}`,
        fault.mode === 'transient',
      );
    }
    this.stillWanted(ctx, operation);
  }

  /**
   * The simulated time an operation takes (`SIM_LATENCY_MS`), before anything else it does:
   * its faults are met, and its change made, once that time is over.
   */
  private async elapse(ctx: OperationContext, operation: SimOperation): Promise<void> {
    if (this.config.simLatencyMs > 0) {
      await sleep(this.config.simLatencyMs, undefined, { signal: ctx.signal }).catch(
        () => undefined,
      );
    }
    this.stillWanted(ctx, operation);
  }

  /**
   * Checked again inside the transaction that applies the change: a caller that gave up while
   * this call waited for the write lock must find the cloud unchanged.
   */
  private stillWanted(ctx: OperationContext, operation: SimOperation): void {
    if (ctx.signal.aborted) {
      throw new BackendError(`simulated backend error: ${operation} was cancelled`, false);
    }
  }

  private async mutate(
    ctx: OperationContext,
    operation: SimOperation,
    backendId: string,
    change: (vm: SimVm) => boolean,
  ): Promise<void> {
    await this.elapse(ctx, operation);
    const known = await this.applyKnown(ctx, operation, backendId, change);
    if (known === APPLIED) return;
    const read = await this.readVm(ctx, operation, backendId, known);
    await this.applyOnce(ctx, operation, async (em) => {
      const vm = await read(em);
      if (!vm || vm.state === 'deleted') {
        throw new BackendError(
          `simulated backend error: VM ${backendId || '(none)'} does not exist`,
          false,
        );
      }
      if (vm.lastOperationId === ctx.operationId) return true;
      return this.saved(em, vm, this.changeOf(vm, change(vm), ctx, operation));
    });
  }

  /**
   * Runs `apply`, which reads a VM (or takes the read `readVm` made) and changes it only if it
   * is still as read (answering whether it did), until it does. SQLite runs it in a write
   * transaction; PostgreSQL with no transaction, one round trip each. A VM changed since it was
   * read is read again.
   */
  private async applyOnce(
    ctx: OperationContext,
    operation: SimOperation,
    apply: (em: EntityManager) => Promise<boolean>,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const applied = await this.tx.runUnlocked((em) => {
        this.stillWanted(ctx, operation);
        return apply(em);
      }, CLOUD_WRITE);
      if (applied) return;
      if (attempt === 3) {
        throw new BackendError(`simulated backend error: ${operation} met a busy VM`, true);
      }
    }
  }

  /**
   * What an operation writes to a VM that `change` made `vm` (`changed` if it changed it): its
   * operation always, so that a repeat applies nothing; its state, flavor and counts if changed.
   */
  private changeOf(
    vm: SimVm,
    changed: boolean,
    ctx: OperationContext,
    operation: SimOperation,
  ): Partial<SimVm> {
    const set: Partial<SimVm> = { lastOperationId: ctx.operationId, updatedAt: new Date() };
    if (!changed) return set;
    const opCounts = { ...vm.opCounts, [operation]: (vm.opCounts[operation] ?? 0) + 1 };
    return { ...set, state: vm.state, flavor: vm.flavor, opCounts };
  }

  /**
   * Sets `set` on the VM if no other operation changed it since it was read as `read`: every
   * change records its operation, and an operation applies once.
   */
  private async saved(em: EntityManager, read: SimVm, set: Partial<SimVm>): Promise<boolean> {
    const where = { backendId: read.backendId, lastOperationId: read.lastOperationId };
    // Forgotten first: if the write fails, what it wrote is unknown.
    this.known.delete(read.backendId);
    const applied = (await this.statements.update(em, where, set)) === 1;
    if (applied) this.remember({ ...read, ...set });
    return applied;
  }

  /**
   * An operation's first try in one statement, from the VM as this process last knew it: the
   * change, made only if the VM is still as known (the operation that last changed it is the
   * same) and no fault is armed for the operation. Answers `APPLIED` if it made it; else what
   * the same statement read of the VM and its faults, for the full path to go on from (`Looked`),
   * or null where it tried nothing: a VM it does not know, a repeat of an operation, a change
   * that would fail (each failure is decided on a fresh read).
   */
  private async applyKnown(
    ctx: OperationContext,
    operation: SimOperation,
    backendId: string,
    change: (vm: SimVm) => boolean,
  ): Promise<typeof APPLIED | Looked | null> {
    const vm = this.known.get(backendId);
    if (!vm || vm.state === 'deleted' || vm.lastOperationId === ctx.operationId) return null;
    const next: SimVm = { ...vm };
    let changed: boolean;
    try {
      changed = change(next);
    } catch {
      return null;
    }
    const set = this.changeOf(next, changed, ctx, operation);
    // Forgotten first: if the write fails, what it wrote is unknown.
    this.known.delete(backendId);
    const outcome = await this.tx.runUnlocked((em) => {
      this.stillWanted(ctx, operation);
      return this.statements.updateUnlessElseRead(
        em,
        { backendId },
        { lastOperationId: vm.lastOperationId },
        set,
        (parameters) => this.faults.armedInto(operation, parameters),
      );
    }, CLOUD_WRITE);
    if (!outcome.changed) return outcome;
    this.remember({ ...vm, ...set });
    return APPLIED;
  }

  /**
   * Keeps a copy of `vm` as the latest known, within `KNOWN_VMS`: callers go on changing their
   * own. Answers `vm`.
   */
  private remember(vm: SimVm): SimVm {
    this.known.delete(vm.backendId);
    this.known.set(vm.backendId, { ...vm, opCounts: { ...vm.opCounts } });
    if (this.known.size > KNOWN_VMS) this.known.delete(this.known.keys().next().value!);
    return vm;
  }
}
