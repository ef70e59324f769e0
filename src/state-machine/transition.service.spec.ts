import { EventEmitter2, EventEmitterModule } from '@nestjs/event-emitter';
import { Test } from '@nestjs/testing';
import { TypeOrmModule, getRepositoryToken } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import type { Actor } from '../auth/actor';
import { DomainError, DomainErrorCode } from '../common/domain-error';
import { AppConfig } from '../config/app-config';
import { validateEnvironment } from '../config/environment';
import { dataSourceOptions } from '../database/data-source-options';
import { Statements } from '../database/entity-statements';
import { TransactionRunner } from '../database/transaction-runner';
import { OPERATION_SCHEDULED } from './domain-events';
import { InstanceEvent } from './instance-event.entity';
import { InstanceTransition } from './instance-transition.entity';
import { Instance } from './instance.entity';
import { Action, InstanceState } from './instance.machine';
import { Operation, OperationStatus } from './operation.entity';
import { TransitionService } from './transition.service';

const alice: Actor = {
  id: '00000000-0000-4000-8000-00000000000a',
  username: 'alice',
  isStaff: false,
};
const bob: Actor = { id: '00000000-0000-4000-8000-00000000000b', username: 'bob', isStaff: false };
const staff: Actor = {
  id: '00000000-0000-4000-8000-00000000000f',
  username: 'admin',
  isStaff: true,
};

describe('TransitionService', () => {
  let service: TransitionService;
  let instances: Repository<Instance>;
  let operations: Repository<Operation>;
  let events: Repository<InstanceEvent>;
  let transitions: Repository<InstanceTransition>;
  let emitted: { name: string; payload: unknown }[];
  let tx: TransactionRunner;

  beforeEach(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        EventEmitterModule.forRoot(),
        TypeOrmModule.forRoot({
          ...dataSourceOptions(
            new AppConfig(validateEnvironment({ DATABASE_URL: 'sqlite::memory:' })),
          ),
          autoLoadEntities: true,
        }),
        TypeOrmModule.forFeature([Instance, InstanceTransition, InstanceEvent, Operation]),
      ],
      providers: [TransactionRunner, Statements, TransitionService],
    }).compile();
    await moduleRef.init();
    service = moduleRef.get(TransitionService);
    tx = moduleRef.get(TransactionRunner);
    instances = moduleRef.get(getRepositoryToken(Instance));
    operations = moduleRef.get(getRepositoryToken(Operation));
    events = moduleRef.get(getRepositoryToken(InstanceEvent));
    transitions = moduleRef.get(getRepositoryToken(InstanceTransition));
    emitted = [];
    moduleRef
      .get(EventEmitter2)
      .onAny((name, payload) => emitted.push({ name: String(name), payload }));
  });

  const newInstance = () =>
    service.create({ name: 'web-1', description: '', flavor: 'small', image: 'debian-12' }, alice);

  /** Drives an instance through provisioning to online, as a worker would. */
  async function onlineInstance(): Promise<Instance> {
    const created = await newInstance();
    const started = await service.begin(created.operationId!);
    await service.succeed(started!.operation, { backendId: 'sim-1' });
    return instances.findOneByOrFail({ id: created.id });
  }

  it('creates in provisioning_scheduled with its transition, event and pending operation in one go', async () => {
    const created = await newInstance();
    expect(created.state).toBe(InstanceState.ProvisioningScheduled);
    const op = await operations.findOneByOrFail({ id: created.operationId! });
    expect(op).toMatchObject({ action: Action.Provision, status: OperationStatus.Pending });
    expect(await transitions.findBy({ instanceId: created.id })).toMatchObject([
      { fromState: null, toState: 'provisioning_scheduled', action: 'provision' },
    ]);
    expect((await events.findBy({ instanceId: created.id })).map((e) => e.type)).toEqual([
      'instance.provision.scheduled',
    ]);
    expect(emitted.filter((e) => e.name === OPERATION_SCHEDULED)).toHaveLength(1);
  });

  it('refuses a transition from a wrong state with a 409-coded error naming both states', async () => {
    const vm = await onlineInstance();
    const before = await events.count();
    const error = await service.schedule(vm.id, Action.Start, alice).catch((e: DomainError) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).code).toBe(DomainErrorCode.InvalidTransition);
    expect((error as DomainError).message).toBe(
      "Cannot start instance in state 'online'; allowed from: offline",
    );
    expect(await events.count()).toBe(before);
    expect(await operations.countBy({ instanceId: vm.id })).toBe(1);
  });

  it('lets exactly one of many concurrent requests win', async () => {
    const vm = await onlineInstance();
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () => service.schedule(vm.id, Action.Stop, alice)),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(rejected).toHaveLength(19);
    for (const r of rejected)
      expect((r.reason as DomainError).code).toBe(DomainErrorCode.InvalidTransition);
    expect(await operations.countBy({ instanceId: vm.id, action: Action.Stop })).toBe(1);
  });

  it("hides another user's instance as not found, and lets staff act on it", async () => {
    const vm = await onlineInstance();
    await expect(service.schedule(vm.id, Action.Stop, bob)).rejects.toMatchObject({
      code: DomainErrorCode.NotFound,
    });
    await expect(service.schedule(vm.id, Action.Stop, staff)).resolves.toMatchObject({
      state: InstanceState.StoppingScheduled,
    });
  });

  it('begins once: a re-run finds the instance in progress and carries on', async () => {
    const created = await newInstance();
    const first = await service.begin(created.operationId!);
    const second = await service.begin(created.operationId!);
    expect(first?.instance.state).toBe(InstanceState.Provisioning);
    expect(second?.instance.state).toBe(InstanceState.Provisioning);
    expect(await events.countBy({ type: 'instance.provision.started' })).toBe(1);
  });

  it('abandons an operation whose instance staff forced elsewhere', async () => {
    const created = await newInstance();
    await service.setOk(created.id, InstanceState.Offline, staff);
    expect(await service.begin(created.operationId!)).toBeNull();
    expect((await operations.findOneByOrFail({ id: created.operationId! })).status).toBe(
      OperationStatus.Abandoned,
    );
    expect((await instances.findOneByOrFail({ id: created.id })).state).toBe(InstanceState.Offline);
  });

  /** Holds `begin`'s `nth` wait for durability (1-based) until the test ends it. */
  function holdDurable(nth: number): () => void {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const durable = tx.durable.bind(tx);
    let calls = 0;
    jest.spyOn(tx, 'durable').mockImplementation((options) => {
      // Called by begin itself, not by the runner's writes inside it.
      const fromBegin = /\[as durable\].*\n\s+at TransitionService\.begin/.test(
        new Error().stack ?? '',
      );
      return fromBegin && ++calls === nth ? held : durable(options);
    });
    return release;
  }
  const answered = (promise: Promise<unknown>) => {
    let done = false;
    void promise.then(() => (done = true));
    return async () => (await new Promise((r) => setTimeout(r, 20)), done);
  };

  it('lets a job go on to its backend only once what was committed before it began is durable', async () => {
    const created = await newInstance();
    const release = holdDurable(1); // the create's commit, handed to the queue before its fsync
    const begin = service.begin(created.operationId!);
    const isAnswered = answered(begin);
    expect(await isAnswered()).toBe(false);
    expect((await instances.findOneByOrFail({ id: created.id })).state).toBe(
      InstanceState.ProvisioningScheduled,
    );
    release();
    expect((await begin)?.instance.state).toBe(InstanceState.Provisioning);
  });

  it('answers a job that stops at its start only once the operation it closed is durable', async () => {
    const created = await newInstance();
    await service.setOk(created.id, InstanceState.Offline, staff);
    const release = holdDurable(2); // after the write that abandons the operation
    const begin = service.begin(created.operationId!);
    const isAnswered = answered(begin);
    expect(await isAnswered()).toBe(false);
    release();
    expect(await begin).toBeNull();
  });

  it('moves a failure to erred with the message, and leaving erred clears it', async () => {
    const vm = await onlineInstance();
    const stopping = await service.schedule(vm.id, Action.Stop, alice);
    const started = await service.begin(stopping.operationId!);
    await service.fail(started!.operation, 'stop failed: boom', 'trace');
    expect(await instances.findOneByOrFail({ id: vm.id })).toMatchObject({
      state: InstanceState.Erred,
      errorMessage: 'stop failed: boom',
      errorTraceback: 'trace',
    });
    const pulling = await service.schedule(vm.id, Action.Pull, alice);
    expect(pulling).toMatchObject({ state: InstanceState.PullingScheduled, errorMessage: '' });
  });

  it('removes an erred instance even when its forced delete fails', async () => {
    const vm = await onlineInstance();
    await service.setErred(vm.id, 'lost', staff);
    const deleting = await service.schedule(vm.id, Action.Delete, alice);
    const started = await service.begin(deleting.operationId!);
    await service.fail(started!.operation, 'delete failed: backend down', '');
    expect(await instances.findOneBy({ id: vm.id })).toBeNull();
    const types = (await events.find({ where: { instanceId: vm.id }, order: { id: 'ASC' } })).map(
      (e) => e.type,
    );
    expect(types.slice(-2)).toEqual(['instance.delete.failed', 'instance.deleted']);
  });

  it('refuses pull of an instance that never got a backend id', async () => {
    const created = await newInstance();
    await service.setErred(created.id, 'provisioning lost', staff);
    await expect(service.schedule(created.id, Action.Pull, alice)).rejects.toMatchObject({
      code: DomainErrorCode.BadRequest,
    });
  });
});
