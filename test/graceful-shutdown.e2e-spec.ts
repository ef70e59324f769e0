import { Deployment } from './support/deployment';
import { createMany, stateCounts, until, waitForAll } from './support/load';

/**
 * SIGTERM, as a container runtime sends it: the worker takes no new job, lets running ones
 * finish within SHUTDOWN_GRACE_MS, hands back the rest, and the process is gone well within the
 * 30 s a runtime waits before SIGKILL. Nothing accepted is lost.
 */
describe('SIGTERM', () => {
  let deployment: Deployment | undefined;
  afterEach(async () => {
    await deployment?.close();
    deployment = undefined;
  });

  it('lets running jobs finish, then exits', async () => {
    deployment = await Deployment.create({ SIM_LATENCY_MS: '1500', WORKER_CONCURRENCY: '4' });
    let service = await deployment.start();
    let admin = service.client(deployment.adminToken);
    const ids = await createMany(admin, 10, 10, 'drain');
    await until('jobs running', async () => ((await stateCounts(admin)).provisioning ?? 0) > 0);
    const list = await admin.get('/api/instances?state=provisioning&limit=500').expect(200);
    const running = (list.body.items as { id: string }[]).map((i) => i.id);

    const exit = await service.terminate();
    const exitedAt = Date.now();
    // Every shutdown hook ran: Nest raises the signal again once the last is done. An exit
    // code instead means the process ended part-way (0: it ran out of work; 1: the deadline).
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(exit.ms).toBeLessThan(10_000);

    service = await deployment.start();
    admin = service.client(deployment.adminToken);
    // The jobs that were running finished before the process went away.
    for (const id of running) {
      const history = await admin.get(`/api/instances/${id}/transitions`).expect(200);
      const done = (history.body.items as { to: string; at: string }[]).find(
        (t) => t.to === 'online',
      );
      expect(done && Date.parse(done.at)).toBeLessThan(exitedAt);
    }
    await waitForAll(admin, ids, 'online');
  });

  it.each([
    ['with attempts left, back to the queue at once', '3'],
    ['on the last attempt, to the stalled-job check', '1'],
  ])('hands back jobs that outlast the grace period: %s', async (_how, attempts) => {
    deployment = await Deployment.create({
      SIM_LATENCY_MS: '30000',
      SHUTDOWN_GRACE_MS: '500',
      JOB_ATTEMPTS: attempts,
      WORKER_CONCURRENCY: '10',
    });
    let service = await deployment.start();
    let admin = service.client(deployment.adminToken);
    const ids = await createMany(admin, 5, 5, 'long');
    await until('all five running', async () => (await stateCounts(admin)).provisioning === 5);

    const exit = await service.terminate();
    expect(exit).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(exit.ms).toBeLessThan(5_000);

    service = await deployment.start({ SIM_LATENCY_MS: '100' });
    admin = service.client(deployment.adminToken);
    await waitForAll(admin, ids, 'online', 30_000);
    const vms = (await admin.get('/api/simulator/vms').expect(200)).body.items as {
      op_counts: object;
    }[];
    expect(vms.map((vm) => vm.op_counts)).toEqual(ids.map(() => ({ provision: 1 })));
  });
});
