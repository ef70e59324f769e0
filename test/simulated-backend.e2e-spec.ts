import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import type { OperationContext } from '../src/backend/cloud-backend';
import { SimFaultsService } from '../src/backend/drivers/simulated/sim-faults.service';
import { SimVm } from '../src/backend/drivers/simulated/sim-vm.entity';
import { SimulatedBackend } from '../src/backend/drivers/simulated/simulated.backend';
import { AppConfig } from '../src/config/app-config';
import { EntityStatements } from '../src/database/entity-statements';
import { TransactionRunner } from '../src/database/transaction-runner';
import { startApp, TestApp } from './support/test-app';

/**
 * The simulated cloud changes a VM it knows (made or last saw) in one statement, conditional on
 * the VM being as it knew it and on no fault being armed for the operation; anything else goes
 * the full way, from a fresh read. A second `SimulatedBackend` on the same database stands for
 * another worker process, which changes VMs behind the first one's back.
 */
describe('the simulated cloud', () => {
  let t: TestApp;
  let sim: SimulatedBackend;
  let other: SimulatedBackend;
  let faults: SimFaultsService;
  const spec = { name: 'vm', flavor: 'small', image: 'debian-12' };

  beforeAll(async () => {
    t = await startApp({ SIM_LATENCY_MS: '0' });
    sim = t.app.get(SimulatedBackend);
    faults = t.app.get(SimFaultsService);
    other = new SimulatedBackend(
      t.app.get(TransactionRunner),
      faults,
      t.app.get(AppConfig),
      t.app.get(DataSource),
    );
  });
  afterAll(() => t?.close());
  afterEach(() => jest.restoreAllMocks());

  function ctx(instanceId: string, operationId = randomUUID()): OperationContext {
    return { operationId, instanceId, signal: new AbortController().signal };
  }

  async function vmOf(instanceId: string) {
    const vms = await faults.listVms(instanceId);
    expect(vms).toHaveLength(1);
    return vms[0];
  }

  /**
   * Counts the statements from here on that only read VMs (with or without the fault check
   * beside them), of `backend`'s own; not those of faults or any other table.
   */
  function countReads(backend = sim): () => number {
    const own = (backend as unknown as { statements: EntityStatements<SimVm> }).statements;
    const beside = jest.spyOn(EntityStatements.prototype, 'findOneBeside');
    const one = jest.spyOn(EntityStatements.prototype, 'findOne');
    return () =>
      [...beside.mock.contexts, ...one.mock.contexts].filter((context) => context === own).length;
  }

  const onPostgres = () => t.env.DATABASE_URL.startsWith('postgres');

  it('makes a VM and changes it, each in one statement with no read', async () => {
    const id = randomUUID();
    const reads = countReads();
    const { backendId } = await sim.provision(ctx(id), spec);
    await sim.stop(ctx(id), backendId);
    await sim.resize(ctx(id), backendId, 'large');
    await sim.start(ctx(id), backendId);
    await sim.restart(ctx(id), backendId);
    expect(reads()).toBe(0);
    expect(await vmOf(id)).toMatchObject({
      backendId,
      state: 'online',
      flavor: 'large',
      opCounts: { provision: 1, stop: 1, resize: 1, start: 1, restart: 1 },
    });
    await sim.delete(ctx(id), backendId);
    expect(reads()).toBe(0);
    expect(await vmOf(id)).toMatchObject({ state: 'deleted' });
  });

  it('changes a VM another process changed since from a fresh read, and counts once', async () => {
    const id = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    await other.stop(ctx(id), backendId);
    const reads = countReads();
    // As this process knew it, the VM is online and a start would change nothing.
    await sim.start(ctx(id), backendId);
    // The missed change reads the VM in the same statement on PostgreSQL, after it on SQLite.
    expect(reads()).toBe(onPostgres() ? 0 : 1);
    expect(await vmOf(id)).toMatchObject({
      state: 'online',
      opCounts: { provision: 1, stop: 1, start: 1 },
    });
  });

  it('fails a change the VM as known allowed but the VM itself no longer does', async () => {
    const id = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    await other.stop(ctx(id), backendId);
    await expect(sim.restart(ctx(id), backendId)).rejects.toThrow(
      `simulated backend error: VM ${backendId} is not running`,
    );
    expect(await vmOf(id)).toMatchObject({
      state: 'offline',
      opCounts: { provision: 1, stop: 1 },
    });
  });

  it('meets a fault armed for the operation, and leaves the VM as it was', async () => {
    const id = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    await faults.arm({ operation: 'stop', instanceId: id, mode: 'error', message: 'host on fire' });
    await expect(sim.stop(ctx(id), backendId)).rejects.toThrow(
      'simulated backend error: host on fire',
    );
    expect(await vmOf(id)).toMatchObject({ state: 'online', opCounts: { provision: 1 } });
    // The fault is spent: the next stop goes through.
    await sim.stop(ctx(id), backendId);
    expect(await vmOf(id)).toMatchObject({ state: 'offline', opCounts: { provision: 1, stop: 1 } });
  });

  it("applies a change all the same when the fault armed is another instance's", async () => {
    const id = randomUUID();
    const bystander = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    const fault = await faults.arm({ operation: 'stop', instanceId: bystander, mode: 'error' });
    try {
      await sim.stop(ctx(id), backendId);
      expect(await vmOf(id)).toMatchObject({
        state: 'offline',
        opCounts: { provision: 1, stop: 1 },
      });
    } finally {
      await faults.disarm(fault.id);
    }
  });

  it('changes a VM right after a write of it failed, from what is stored', async () => {
    const id = randomUUID();
    const bystander = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    // The fault sends the stop the full way (a fresh read, then its write), and the write fails.
    const fault = await faults.arm({ operation: 'stop', instanceId: bystander, mode: 'error' });
    jest
      .spyOn(EntityStatements.prototype, 'update')
      .mockRejectedValueOnce(new Error('connection lost'));
    const stopping = ctx(id);
    await expect(sim.stop(stopping, backendId)).rejects.toThrow('connection lost');
    await faults.disarm(fault.id);
    expect(await vmOf(id)).toMatchObject({ state: 'online', opCounts: { provision: 1 } });
    // The retry of the same operation finds the VM still online, and stops it.
    await sim.stop(stopping, backendId);
    expect(await vmOf(id)).toMatchObject({ state: 'offline', opCounts: { provision: 1, stop: 1 } });
    await expect(sim.resize(ctx(id), backendId, 'large')).resolves.toBeUndefined();
  });

  it('changes a VM no operation has changed yet (one made elsewhere) once it knows it', async () => {
    const id = randomUUID();
    const backendId = `sim-${randomUUID()}`;
    const now = new Date();
    await t.app
      .get(DataSource)
      .getRepository(SimVm)
      .insert({
        backendId,
        instanceId: id,
        ...spec,
        state: 'offline',
        lastOperationId: null,
        opCounts: {},
        createdAt: now,
        updatedAt: now,
      });
    // A refused change reads the VM, and so comes to know it.
    await expect(sim.restart(ctx(id), backendId)).rejects.toThrow('is not running');
    const reads = countReads();
    await sim.start(ctx(id), backendId);
    expect(reads()).toBe(0);
    expect(await vmOf(id)).toMatchObject({ state: 'online', opCounts: { start: 1 } });
  });

  it("makes a VM all the same when the fault armed for provisioning is another instance's", async () => {
    const id = randomUUID();
    const fault = await faults.arm({
      operation: 'provision',
      instanceId: randomUUID(),
      mode: 'error',
    });
    try {
      const { backendId } = await sim.provision(ctx(id), spec);
      expect(await vmOf(id)).toMatchObject({ backendId, opCounts: { provision: 1 } });
    } finally {
      await faults.disarm(fault.id);
    }
  });

  it('takes the simulated time once, also when the first try misses', async () => {
    const latencyMs = 300;
    const slow = new SimulatedBackend(
      t.app.get(TransactionRunner),
      faults,
      { ...t.app.get(AppConfig), simLatencyMs: latencyMs } as AppConfig,
      t.app.get(DataSource),
    );
    const id = randomUUID();
    const { backendId } = await slow.provision(ctx(id), spec);
    const fault = await faults.arm({ operation: 'stop', instanceId: randomUUID(), mode: 'error' });
    try {
      const started = performance.now();
      await slow.stop(ctx(id), backendId);
      const took = performance.now() - started;
      expect(took).toBeGreaterThanOrEqual(latencyMs - 5);
      expect(took).toBeLessThan(2 * latencyMs);
    } finally {
      await faults.disarm(fault.id);
    }
    expect(await vmOf(id)).toMatchObject({ state: 'offline', opCounts: { provision: 1, stop: 1 } });
  });

  it('makes no VM when a fault is armed for provisioning, and makes it next time', async () => {
    const id = randomUUID();
    await faults.arm({ operation: 'provision', instanceId: id, mode: 'transient' });
    await expect(sim.provision(ctx(id), spec)).rejects.toThrow(
      'simulated backend error: injected transient failure',
    );
    expect(await faults.listVms(id)).toEqual([]);
    const { backendId } = await sim.provision(ctx(id), spec);
    expect(await vmOf(id)).toMatchObject({
      backendId,
      state: 'online',
      opCounts: { provision: 1 },
    });
  });

  it('changes nothing when an operation runs again, in this process or another', async () => {
    const id = randomUUID();
    const provisioning = ctx(id);
    const { backendId } = await sim.provision(provisioning, spec);
    await expect(sim.provision(provisioning, spec)).resolves.toEqual({ backendId });
    await expect(other.provision(provisioning, spec)).resolves.toEqual({ backendId });
    const stopping = ctx(id);
    await sim.stop(stopping, backendId);
    await sim.stop(stopping, backendId);
    await other.stop(stopping, backendId);
    expect(await vmOf(id)).toMatchObject({ state: 'offline', opCounts: { provision: 1, stop: 1 } });
  });
});
