import type { ApiClient, InstanceBody } from './api';

/** Runs `work` over `items`, `concurrency` at a time; resolves with each item's outcome in order. */
export async function pool<T, R>(
  items: readonly T[],
  concurrency: number,
  work: (item: T, index: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const runner = async () => {
    while (next < items.length) {
      const index = next++;
      try {
        results[index] = { status: 'fulfilled', value: await work(items[index], index) };
      } catch (reason) {
        results[index] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, runner));
  return results;
}

/** Creates `count` instances; the ids of those the API accepted (a dead process accepts none). */
export async function createMany(
  client: ApiClient,
  count: number,
  concurrency: number,
  prefix = 'load',
): Promise<string[]> {
  const outcomes = await pool([...Array(count).keys()], concurrency, async (i) => {
    const res = await client.post('/api/instances', { name: `${prefix}-${i}`, flavor: 'small' });
    if (res.status !== 202) throw new Error(`create answered ${res.status}: ${res.text}`);
    return (res.body as InstanceBody).id;
  });
  return outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
}

/** Sends `action` to every instance; every one must be accepted. */
export async function actOnAll(
  client: ApiClient,
  ids: readonly string[],
  action: string,
  concurrency: number,
): Promise<void> {
  const outcomes = await pool(ids, concurrency, (id) => client.action(id, action));
  const refused = outcomes.filter((o) => o.status === 'rejected');
  if (refused.length > 0) {
    throw new Error(`${refused.length} ${action}(s) refused, e.g. ${String(refused[0].reason)}`);
  }
}

/** Every instance a client can see, page by page. */
async function listAll(client: ApiClient): Promise<InstanceBody[]> {
  const all: InstanceBody[] = [];
  for (let offset = 0; ; offset += 500) {
    const res = await client.get(`/api/instances?limit=500&offset=${offset}`);
    if (res.status !== 200) throw new Error(`list answered ${res.status}: ${res.text}`);
    const items = res.body.items as InstanceBody[];
    all.push(...items);
    if (items.length < 500) return all;
  }
}

/** How many instances, of everyone's, are in each state (a staff client sees all). */
export async function stateCounts(staff: ApiClient): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const item of await listAll(staff)) counts[item.state] = (counts[item.state] ?? 0) + 1;
  return counts;
}

/** Waits until `ids` are all in `state` (`'gone'`: all deleted); says where they are if not. */
export async function waitForAll(
  staff: ApiClient,
  ids: readonly string[],
  state: string,
  timeoutMs = 60_000,
): Promise<void> {
  const wanted = new Set(ids);
  const deadline = Date.now() + timeoutMs;
  let seen: Record<string, number> = {};
  while (Date.now() < deadline) {
    // A process being restarted answers nothing for a moment: look again.
    const items = await listAll(staff).catch(() => null);
    if (items) {
      const mine = items.filter((i) => wanted.has(i.id));
      seen = {};
      for (const item of mine) seen[item.state] = (seen[item.state] ?? 0) + 1;
      const done =
        state === 'gone'
          ? mine.length === 0
          : mine.length === wanted.size && mine.every((i) => i.state === state);
      if (done) return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `${ids.length} instance(s) did not all reach '${state}' in ${timeoutMs} ms; ` +
      `states seen: ${JSON.stringify(seen)}`,
  );
}

/** Polls `probe` until it is true. */
export async function until(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
