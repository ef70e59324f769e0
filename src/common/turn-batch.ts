/**
 * Collects what arrives during one turn of the event loop and hands it over, together, on the
 * next: a burst (one commit that serves many requests) becomes one piece of work.
 */
export class TurnBatch<T> {
  private items: T[] = [];

  constructor(private readonly flush: (items: T[]) => void) {}

  add(item: T): void {
    this.items.push(item);
    if (this.items.length > 1) return;
    setImmediate(() => {
      const items = this.items;
      this.items = [];
      this.flush(items);
    });
  }
}
