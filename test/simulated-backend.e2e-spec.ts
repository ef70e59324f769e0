import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { DataSource } from 'typeorm';
import type { OperationContext } from '../src/backend/cloud-backend';
import { SimFaultsService } from '../src/backend/drivers/simulated/sim-faults.service';
import { SimVm } from '../src/backend/drivers/simulated/sim-vm.entity';
import { SimulatedBackend } from '../src/backend/drivers/simulated/simulated.backend';
import { AppConfig } from '../src/config/app-config';
import { EntityStatements, Statements } from '../src/database/entity-statements';
import { TransactionRunner } from '../src/database/transaction-runner';
import { untilWaitingOnLock } from './support/pg-locks';
import { startApp, TestApp } from './support/test-app';

const postgres = process.env.TEST_DATABASE_URL?.startsWith('postgres') ?? false;

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
    other = anotherBackend();
  });
  afterAll(() => t?.close());
  afterEach(() => jest.restoreAllMocks());

  /** A backend of its own on the same database, as another process has; `config` changed. */
  function anotherBackend(config: Partial<AppConfig> = {}): SimulatedBackend {
    return new SimulatedBackend(
      t.app.get(TransactionRunner),
      faults,
      { ...t.app.get(AppConfig), ...config } as AppConfig,
      t.app.get(DataSource),
      t.app.get(Statements),
    );
  }

  function ctx(instanceId: string, operationId = randomUUID()): OperationContext {
    return { operationId, instanceId, signal: new AbortController().signal };
  }

  async function vmOf(instanceId: string) {
    const vms = await faults.listVms(instanceId);
    expect(vms).toHaveLength(1);
    return vms[0];
  }

  function statementsOf(backend: SimulatedBackend): EntityStatements<SimVm> {
    return (backend as unknown as { statements: EntityStatements<SimVm> }).statements;
  }

  /**
   * Watches `backend`'s own statements on VMs from here on: the first tries that changed nothing
   * (`misses`), and the statements that only read (with or without the fault check beside them;
   * on SQLite a miss makes one).
   */
  function watch(backend = sim) {
    const own = statementsOf(backend);
    const tries = jest.spyOn(own, 'updateUnlessElseRead');
    const reads = [jest.spyOn(own, 'findOneBeside'), jest.spyOn(own, 'findOne')];
    return {
      reads: () => reads.reduce((n, spy) => n + spy.mock.calls.length, 0),
      misses: async () => {
        const outcomes = await Promise.all(tries.mock.results.map((result) => result.value));
        return outcomes.filter((outcome: { changed: boolean }) => !outcome.changed).length;
      },
    };
  }

  const onPostgres = () => t.env.DATABASE_URL.startsWith('postgres');

  it('makes a VM and changes it, each in one statement with no read', async () => {
    const id = randomUUID();
    const watched = watch();
    const { backendId } = await sim.provision(ctx(id), spec);
    await sim.stop(ctx(id), backendId);
    await sim.resize(ctx(id), backendId, 'large');
    await sim.start(ctx(id), backendId);
    await sim.restart(ctx(id), backendId);
    expect(await watched.misses()).toBe(0);
    expect(watched.reads()).toBe(0);
    expect(await vmOf(id)).toMatchObject({
      backendId,
      state: 'online',
      flavor: 'large',
      opCounts: { provision: 1, stop: 1, resize: 1, start: 1, restart: 1 },
    });
    await sim.delete(ctx(id), backendId);
    expect(await watched.misses()).toBe(0);
    expect(watched.reads()).toBe(0);
    expect(await vmOf(id)).toMatchObject({ state: 'deleted' });
  });

  it('changes a VM another process changed since from a fresh read, and counts once', async () => {
    const id = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    await other.stop(ctx(id), backendId);
    const watched = watch();
    // As this process knew it, the VM is online and a start would change nothing.
    await sim.start(ctx(id), backendId);
    // The missed change reads the VM in the same statement on PostgreSQL, after it on SQLite;
    // the full path goes on from that read.
    expect(await watched.misses()).toBe(1);
    expect(watched.reads()).toBe(onPostgres() ? 0 : 1);
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
    jest.spyOn(statementsOf(sim), 'update').mockRejectedValueOnce(new Error('connection lost'));
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
    const watched = watch();
    await sim.start(ctx(id), backendId);
    expect(await watched.misses()).toBe(0);
    expect(watched.reads()).toBe(0);
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
    const slow = anotherBackend({ simLatencyMs: latencyMs });
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

  /**
   * PostgreSQL: a first try whose UPDATE waits for another transaction's change of the VM reads
   * the VM as its statement began, which is the VM as known, not as stored once it stops
   * waiting. Here another session holds a stop of the VM uncommitted when a restart begins: the
   * restart's change from that read misses in turn, and the refusal comes from a fresh read.
   */
  (postgres ? it : it.skip)('goes on from a fresh read when its first try waited', async () => {
    const id = randomUUID();
    const { backendId } = await sim.provision(ctx(id), spec);
    const session = new Client({ connectionString: t.env.DATABASE_URL });
    await session.connect();
    try {
      await session.query('BEGIN');
      await session.query(
        `UPDATE sim_vms SET state = 'offline', last_operation_id = $1,
           op_counts = '{"provision":1,"stop":1}' WHERE backend_id = $2`,
        [randomUUID(), backendId],
      );
      const restart = sim.restart(ctx(id), backendId);
      restart.catch(() => undefined);
      await untilWaitingOnLock(
        t.app.get(DataSource),
        'WITH changed AS (UPDATE "sim_vms"',
        'the restart to wait on the row lock',
      );
      await session.query('COMMIT');
      await expect(restart).rejects.toThrow(`VM ${backendId} is not running`);
    } finally {
      await session.end();
    }
    expect(await vmOf(id)).toMatchObject({
      state: 'offline',
      opCounts: { provision: 1, stop: 1 },
    });
  });
});
