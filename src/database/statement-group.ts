/**
 * Thrown by `many` when it failed before sending anything (building its statement, say): none
 * of the items was stored, and each is stored alone.
 */
export class NotSent extends Error {
  constructor(readonly cause: unknown) {
    super(`The statement was not sent: ${String((cause as Error)?.message ?? cause)}`);
  }
}

/** The most items one statement stores. */
const MAX_GROUP = 64;

interface Pending<T, R> {
  item: T;
  keys: readonly string[];
  resolve: (result: R) => void;
  reject: (error: unknown) => void;
}

/**
 * Stores items one statement at a time, and those that arrive while a statement runs together
 * in the next (group commit, as SQLite's `TransactionRunner` does with transactions): under load
 * one statement, one commit and one turn of whatever lock it takes serve many items, and when
 * nothing runs an item is stored at once.
 *
 * Items that name a common key (an instance they change, say) never share a statement, and are
 * stored in the order they came. `one` stores an item alone; `many` stores several as one
 * statement, answering each one's result in order. When `many` fails having stored none of them
 * (it threw `NotSent`, or `storedNone` says so: the database refused the statement, which rolled
 * back), each is stored alone,
 * so an item that cannot be stored fails by itself, as it would have without the group; when
 * it may have stored them (the connection was lost before the answer), each hears of the error.
 */
export class StatementGroup<T, R> {
  private readonly queue: Pending<T, R>[] = [];
  private running = false;
  private groups = 0;
  private grouped = 0;

  constructor(
    private readonly one: (item: T) => Promise<R>,
    private readonly many: (items: T[]) => Promise<R[]>,
    private readonly keysOf: (item: T) => readonly string[],
    /** Whether an error of `many` (other than `NotSent`) means it stored none of its items. */
    private readonly storedNone: (error: unknown) => boolean,
  ) {}

  /** Statements that stored more than one item, and the items they stored. */
  get stats(): { groups: number; grouped: number } {
    return { groups: this.groups, grouped: this.grouped };
  }

  store(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, keys: this.keysOf(item), resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const group = this.take();
        if (group.length === 1) {
          await this.settle(group[0], () => this.one(group[0].item));
          continue;
        }
        let results: R[];
        try {
          results = await this.many(group.map((pending) => pending.item));
        } catch (error) {
          if (error instanceof NotSent || this.storedNone(error)) {
            // Each goes alone, and fails alone if it must.
            await Promise.all(group.map((p) => this.settle(p, () => this.one(p.item))));
          } else {
            // It may have been stored (a connection lost before the answer): storing any again
            // could apply it twice, so each hears of the error.
            for (const pending of group) pending.reject(error);
          }
          continue;
        }
        if (results.length !== group.length) {
          const error = new Error(
            `A statement of ${group.length} items answered ${results.length}`,
          );
          for (const pending of group) pending.reject(error);
          continue;
        }
        this.groups++;
        this.grouped += group.length;
        group.forEach((pending, i) => pending.resolve(results[i]));
      }
    } finally {
      this.running = false;
    }
  }

  /** The next group: queued items in order, none naming a key an earlier one names. */
  private take(): Pending<T, R>[] {
    const taken: Pending<T, R>[] = [];
    const keys = new Set<string>();
    for (let i = 0; i < this.queue.length && taken.length < MAX_GROUP;) {
      const pending = this.queue[i];
      if (pending.keys.some((key) => keys.has(key))) {
        // It waits, and so does anything after it that shares a key with it: items that share
        // a key are stored in the order they came.
        for (const key of pending.keys) keys.add(key);
        i++;
        continue;
      }
      for (const key of pending.keys) keys.add(key);
      taken.push(pending);
      this.queue.splice(i, 1);
    }
    return taken;
  }

  private async settle(pending: Pending<T, R>, run: () => Promise<R>): Promise<void> {
    try {
      pending.resolve(await run());
    } catch (error) {
      pending.reject(error);
    }
  }
}
