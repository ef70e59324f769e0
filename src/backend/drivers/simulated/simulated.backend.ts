import { Injectable } from '@nestjs/common';
import { v7 as uuidv7 } from 'uuid';
import { setTimeout as sleep } from 'node:timers/promises';
import { InjectDataSource } from '@nestjs/typeorm';
import { DataSource, EntityManager } from 'typeorm';
import { AppConfig } from '../../../config/app-config';
import { EntityStatements } from '../../../database/entity-statements';
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
 * A fake cloud that keeps its VMs in the database (tables of its own), so they survive a restart
 * and every process sees the same cloud. Each operation takes `SIM_LATENCY_MS`, obeys armed
 * faults, and is idempotent per operation id.
 */
@Injectable()
export class SimulatedBackend implements CloudBackend {
  private readonly statements: EntityStatements<SimVm>;

  constructor(
    private readonly tx: TransactionRunner,
    private readonly faults: SimFaultsService,
    private readonly config: AppConfig,
    @InjectDataSource() private readonly dataSource: DataSource,
  ) {
    this.statements = new EntityStatements(dataSource, SimVm);
  }

  async provision(ctx: OperationContext, spec: VmSpec): Promise<{ backendId: string }> {
    // One VM per instance: a re-run of provisioning finds the VM it made.
    const existing = await this.lookUp(ctx, 'provision', { instanceId: ctx.instanceId });
    if (existing) return { backendId: existing.backendId };
    return this.tx.runUnlocked(async (em) => {
      this.stillWanted(ctx, 'provision');
      const now = new Date();
      const vm: SimVm = {
        backendId: `sim-${uuidv7()}`,
        instanceId: ctx.instanceId,
        ...spec,
        state: 'online',
        lastOperationId: ctx.operationId,
        opCounts: { provision: 1 },
        createdAt: now,
        updatedAt: now,
      };
      if (await this.statements.insertIfAbsent(em, vm, ['instanceId'])) {
        return { backendId: vm.backendId };
      }
      // A run of the same operation beside this one made it first.
      const made = await this.statements.findOne(em, { instanceId: ctx.instanceId });
      return { backendId: made!.backendId };
    });
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
    const read = await this.readVm(ctx, 'delete', backendId);
    await this.applyOnce(ctx, 'delete', async (em) => {
      const vm = await read(em);
      if (!vm || vm.state === 'deleted') return true;
      vm.state = 'deleted';
      return this.save(em, vm, ctx, 'delete');
    });
  }

  async describe(
    ctx: OperationContext,
    backendId: string,
  ): Promise<{ state: VmPowerState } | null> {
    await this.prelude(ctx, 'pull');
    // Like every read outside a transaction, kept out of a write group (`TransactionRunner.read`);
    // the simulated cloud's own records need not wait for Provisor's disk.
    const vm = await this.tx.read(
      () => this.statements.findOne(this.dataSource.manager, { backendId }),
      { durable: false },
    );
    return vm && vm.state !== 'deleted' ? { state: vm.state } : null;
  }

  /**
   * The prelude of an operation on an existing VM, whose first read of the VM comes with the
   * fault check in one statement. Answers the VM's read for `applyOnce`: that first read on the
   * first try (its change is conditional on the VM being as read, so a VM changed during the
   * simulated wait is only read again), a fresh one on each later try.
   */
  private async readVm(
    ctx: OperationContext,
    operation: SimOperation,
    backendId: string,
  ): Promise<(em: EntityManager) => Promise<SimVm | null>> {
    let first: SimVm | null | undefined = await this.lookUp(ctx, operation, { backendId });
    return async (em) => {
      const vm = first !== undefined ? first : await this.statements.findOne(em, { backendId });
      first = undefined;
      return vm;
    };
  }

  /**
   * Reads the VM matching `where` with the fault check beside it, in one statement, then runs
   * the prelude (`prelude`) with what the check found.
   */
  private async lookUp(
    ctx: OperationContext,
    operation: SimOperation,
    where: Partial<SimVm>,
  ): Promise<SimVm | null> {
    const { row, beside } = await this.tx.read(
      () =>
        this.statements.findOneBeside(this.dataSource.manager, where, (parameters) =>
          this.faults.armedInto(operation, parameters),
        ),
      { durable: false },
    );
    // true on PostgreSQL, 1 on SQLite.
    await this.prelude(ctx, operation, beside === true || beside === 1);
    return row;
  }

  /** Armed faults first, then the simulated time the operation takes. */
  private async prelude(
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
    const read = await this.readVm(ctx, operation, backendId);
    await this.applyOnce(ctx, operation, async (em) => {
      const vm = await read(em);
      if (!vm || vm.state === 'deleted') {
        throw new BackendError(
          `simulated backend error: VM ${backendId || '(none)'} does not exist`,
          false,
        );
      }
      if (vm.lastOperationId === ctx.operationId) return true;
      if (change(vm)) return this.save(em, vm, ctx, operation);
      return this.saved(em, vm, { lastOperationId: ctx.operationId, updatedAt: new Date() });
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
      });
      if (applied) return;
      if (attempt === 3) {
        throw new BackendError(`simulated backend error: ${operation} met a busy VM`, true);
      }
    }
  }

  private save(
    em: EntityManager,
    vm: SimVm,
    ctx: OperationContext,
    operation: SimOperation,
  ): Promise<boolean> {
    const opCounts = { ...vm.opCounts, [operation]: (vm.opCounts[operation] ?? 0) + 1 };
    const { state, flavor } = vm;
    return this.saved(em, vm, {
      state,
      flavor,
      opCounts,
      lastOperationId: ctx.operationId,
      updatedAt: new Date(),
    });
  }

  /**
   * Sets `set` on the VM if no other operation changed it since it was read as `read`: every
   * change records its operation, and an operation applies once.
   */
  private async saved(em: EntityManager, read: SimVm, set: Partial<SimVm>): Promise<boolean> {
    const where = { backendId: read.backendId, lastOperationId: read.lastOperationId };
    return (await this.statements.update(em, where, set)) === 1;
  }
}
