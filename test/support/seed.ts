import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import { Instance } from '../../src/state-machine/instance.entity';

/**
 * Inserts `count` settled instances straight into the table, 500 to a statement, for tests that
 * ask the planner about a table of some size. `row(i)` gives what differs between them: their
 * state, owner and times at least.
 */
export async function seedInstances(
  db: DataSource,
  count: number,
  row: (i: number) => Pick<Instance, 'state' | 'ownerId' | 'createdAt' | 'updatedAt'>,
): Promise<void> {
  for (let from = 0; from < count; from += 500) {
    const rows = Array.from({ length: Math.min(500, count - from) }, (_, k) =>
      Object.assign(new Instance(), {
        id: randomUUID(),
        name: `seed-${from + k}`,
        description: '',
        flavor: 'small',
        image: 'debian-12',
        errorMessage: '',
        errorTraceback: '',
        backendId: `sim-${from + k}`,
        operationId: null,
        ...row(from + k),
      }),
    );
    await db.getRepository(Instance).insert(rows);
  }
}
