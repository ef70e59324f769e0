import { RateLimitStore } from './rate-limit.store';

describe('RateLimitStore', () => {
  let now: number;
  let store: RateLimitStore;

  beforeEach(() => {
    now = 1_000_000;
    store = new RateLimitStore(() => now);
  });

  const hit = (key = 'default:alice') => store.increment(key, 60_000, 3, 60_000, 'default');

  it('counts requests in a minute from the first, then refuses for the block', async () => {
    expect(await hit()).toEqual({
      totalHits: 1,
      timeToExpire: 60,
      isBlocked: false,
      timeToBlockExpire: 0,
    });
    now += 10_000;
    expect((await hit()).totalHits).toBe(2);
    expect(await hit()).toMatchObject({ totalHits: 3, isBlocked: false, timeToExpire: 50 });
    const over = await hit();
    expect(over).toEqual({
      totalHits: 4,
      timeToExpire: 50,
      isBlocked: true,
      timeToBlockExpire: 60,
    });
    // Refused requests are not counted, and the block holds past the window's end.
    now += 55_000;
    expect(await hit()).toMatchObject({ totalHits: 4, isBlocked: true, timeToBlockExpire: 5 });
    now += 5_000;
    expect(await hit()).toEqual({
      totalHits: 1,
      timeToExpire: 60,
      isBlocked: false,
      timeToBlockExpire: 0,
    });
  });

  it('opens a new window once a minute has passed', async () => {
    await hit();
    await hit();
    now += 60_000;
    expect(await hit()).toMatchObject({ totalHits: 1, isBlocked: false });
  });

  it('counts each key apart', async () => {
    for (let i = 0; i < 4; i++) await hit('default:alice');
    expect(await hit('default:bob')).toMatchObject({ totalHits: 1, isBlocked: false });
    expect((await hit('default:alice')).isBlocked).toBe(true);
  });

  it('keeps one window per key whatever the request count, and drops ended ones', async () => {
    for (let i = 0; i < 200_000; i++) {
      await store.increment('default:busy', 60_000, 1_000_000, 60_000, 'default');
    }
    expect(
      await store.increment('default:busy', 60_000, 1_000_000, 60_000, 'default'),
    ).toMatchObject({ totalHits: 200_001, isBlocked: false });
    await hit('default:idle');
    expect(store.size).toBe(2);
    // Ended windows go with the first request a minute after the last sweep.
    now += 60_000;
    await hit('default:next');
    expect(store.size).toBe(1);
  });
});
