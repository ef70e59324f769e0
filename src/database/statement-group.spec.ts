import { NotSent, StatementGroup } from './statement-group';

/** A statement the test finishes by hand. */
interface Run {
  items: string[];
  finish(results?: string[]): void;
  fail(error: Error): void;
}

function harness(keysOf: (item: string) => string[] = (item) => [item]) {
  const runs: Run[] = [];
  const start = (items: string[]) =>
    new Promise<string[]>((resolve, reject) => {
      runs.push({
        items,
        finish: (results) => resolve(results ?? items.map((item) => `stored ${item}`)),
        fail: reject,
      });
    });
  const group = new StatementGroup<string, string>(
    async (item) => {
      const [result] = await start([item]);
      if (result === 'reject') throw new Error(`${item} failed alone`);
      return result;
    },
    (items) => start(items),
    keysOf,
    // A lost connection may have stored the items; any other failure stored none.
    (error) => !(error as Error).message.includes('lost'),
  );
  return { group, runs };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** 'b' and 'c' arrive while 'a' is stored, and their statement (`runs[1]`) has started. */
async function bAndCTogether() {
  const { group, runs } = harness();
  const first = group.store('a');
  await tick();
  const later = ['b', 'c'].map((item) => group.store(item).catch((error: Error) => error));
  await tick();
  runs[0].finish();
  await first;
  await tick();
  expect(runs[1].items).toEqual(['b', 'c']);
  return { group, runs, later };
}

describe('StatementGroup', () => {
  it('stores an item at once when nothing runs', async () => {
    const { group, runs } = harness();
    const stored = group.store('a');
    await tick();
    expect(runs.map((run) => run.items)).toEqual([['a']]);
    runs[0].finish();
    await expect(stored).resolves.toBe('stored a');
    expect(group.stats).toEqual({ groups: 0, grouped: 0 });
  });

  it('stores what arrives while a statement runs together, in order, in the next', async () => {
    const { group, runs } = harness();
    const first = group.store('a');
    await tick();
    const later = ['b', 'c', 'd'].map((item) => group.store(item));
    await tick();
    expect(runs).toHaveLength(1);
    runs[0].finish();
    await first;
    await tick();
    expect(runs[1].items).toEqual(['b', 'c', 'd']);
    runs[1].finish(['B', 'C', 'D']);
    await expect(Promise.all(later)).resolves.toEqual(['B', 'C', 'D']);
    expect(group.stats).toEqual({ groups: 1, grouped: 3 });
  });

  it('keeps items that share a key in separate statements, in their order', async () => {
    const { group, runs } = harness((item) => [item.slice(0, 1)]);
    const first = group.store('x0');
    await tick();
    const later = ['a1', 'b1', 'a2', 'c1', 'a3'].map((item) => group.store(item));
    await tick();
    runs[0].finish();
    await first;
    await tick();
    expect(runs[1].items).toEqual(['a1', 'b1', 'c1']);
    runs[1].finish();
    await tick();
    expect(runs[2].items).toEqual(['a2']);
    runs[2].finish();
    await tick();
    expect(runs[3].items).toEqual(['a3']);
    runs[3].finish();
    await expect(Promise.all(later)).resolves.toEqual([
      'stored a1',
      'stored b1',
      'stored a2',
      'stored c1',
      'stored a3',
    ]);
  });

  it('stores each item alone when their statement fails, and fails only the one that must', async () => {
    const { group, runs, later } = await bAndCTogether();
    runs[1].fail(new Error('statement failed'));
    await tick();
    expect(runs.slice(2).map((run) => run.items)).toEqual([['b'], ['c']]);
    runs[2].finish(['reject']);
    runs[3].finish();
    const [b, c] = await Promise.all(later);
    expect((b as Error).message).toBe('b failed alone');
    expect(c).toBe('stored c');
    expect(group.stats).toEqual({ groups: 0, grouped: 0 });
  });

  it('fails every item, and stores none again, when their statement may have stored them', async () => {
    const { runs, later } = await bAndCTogether();
    runs[1].fail(new Error('connection lost'));
    const [b, c] = await Promise.all(later);
    expect((b as Error).message).toBe('connection lost');
    expect((c as Error).message).toBe('connection lost');
    await tick();
    expect(runs).toHaveLength(2);
  });

  it('stores each item alone when their statement was never sent, whatever the cause', async () => {
    const { runs, later } = await bAndCTogether();
    runs[1].fail(new NotSent(new Error('connection lost while building')));
    await tick();
    expect(runs.slice(2).map((run) => run.items)).toEqual([['b'], ['c']]);
    runs[2].finish();
    runs[3].finish();
    await expect(Promise.all(later)).resolves.toEqual(['stored b', 'stored c']);
  });

  it('fails every item when their statement answers a different number of results', async () => {
    const { runs, later } = await bAndCTogether();
    runs[1].finish(['B']);
    const [b, c] = await Promise.all(later);
    expect((b as Error).message).toBe('A statement of 2 items answered 1');
    expect(c).toBe(b as Error);
  });

  it('keeps an item behind a waiting item it shares a key with', async () => {
    // b waits for a (key x); c shares key y with b only, so it must not overtake b.
    const keys: Record<string, string[]> = { a: ['x'], b: ['x', 'y'], c: ['y'], d: ['z'] };
    const { group, runs } = harness((item) => keys[item] ?? [item]);
    const first = group.store('first');
    await tick();
    const later = ['a', 'b', 'c', 'd'].map((item) => group.store(item));
    await tick();
    runs[0].finish();
    await first;
    await tick();
    expect(runs[1].items).toEqual(['a', 'd']);
    runs[1].finish();
    await tick();
    expect(runs[2].items).toEqual(['b']);
    runs[2].finish();
    await tick();
    expect(runs[3].items).toEqual(['c']);
    runs[3].finish();
    await expect(Promise.all(later)).resolves.toHaveLength(4);
  });

  it('goes on after a failure, and takes no more than 64 items in one statement', async () => {
    const { group, runs } = harness();
    const first = group.store('first').catch((error: Error) => error.message);
    await tick();
    const later = Array.from({ length: 70 }, (_, i) => group.store(`item ${i}`));
    await tick();
    runs[0].fail(new Error('connection lost'));
    await expect(first).resolves.toBe('connection lost');
    await tick();
    expect(runs[1].items).toHaveLength(64);
    runs[1].finish();
    await tick();
    expect(runs[2].items).toEqual([
      'item 64',
      'item 65',
      'item 66',
      'item 67',
      'item 68',
      'item 69',
    ]);
    runs[2].finish();
    expect(await Promise.all(later)).toHaveLength(70);
    expect(group.stats).toEqual({ groups: 2, grouped: 70 });
  });
});
