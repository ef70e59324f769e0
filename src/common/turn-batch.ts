/**
 * Collects what arrives during one turn of the event loop and hands it over together: a burst
 * (one commit that serves many requests) becomes one piece of work.
 *
 * `turn` (the default) hands over on the next turn, after the I/O already waiting. `tick` hands
 * over as soon as the current callback and the promise continuations it set off are done, ahead
 * of any I/O: for work on the way of a client's request (a job's hand-over to Redis) that should
 * not queue behind other work of the same turn. A commit answers its transactions from one
 * callback, so either way they arrive in one batch.
 */
export class TurnBatch<T> {
  private items: T[] = [];
  private readonly schedule: (callback: () => void) => void;

  constructor(
    private readonly flush: (items: T[]) => void,
    when: 'turn' | 'tick' = 'turn',
  ) {
    this.schedule = when === 'tick' ? process.nextTick : setImmediate;
  }

  add(item: T): void {
    this.items.push(item);
    if (this.items.length > 1) return;
    this.schedule(() => {
      const items = this.items;
      this.items = [];
      this.flush(items);
    });
  }
}
