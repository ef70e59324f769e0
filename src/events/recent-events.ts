import type { InstanceEvent } from '../state-machine/instance-event.entity';

/** Events kept: enough for every stream that keeps up, while a lagging one reads the log. */
const KEEP = 1024;

/**
 * The events this process announced most recently (each after its commit is durable), kept while
 * their ids run on without a gap, so that an event stream woken by this process's own commits
 * can take what is new from memory instead of reading the event log again.
 *
 * It answers only for a cursor it can vouch for: every id after the cursor, up to the newest id
 * this process has announced, must be in the run. Ids this process never saw (another process's,
 * or ids PostgreSQL's sequence skipped) break the run, and one announced out of order (commits
 * on two connections acknowledged in the other order) empties it: then `after` answers null and
 * the stream reads the log, which shows ids in order (see `EVENT_LOG_LOCK`). Events newer than
 * the newest announced here, from another process, are the log's to show, on that process's
 * wake-up.
 */
export class RecentEvents {
  /** Ids without a gap, oldest first, ending at `newest` (or none). */
  private run: InstanceEvent[] = [];
  private newest = 0;

  /** The highest id this process has announced (0 before the first). */
  get newestId(): number {
    return this.newest;
  }

  add(event: InstanceEvent): void {
    if (event.id === this.newest + 1 && this.run.length > 0) {
      this.run.push(event);
    } else if (event.id > this.newest) {
      // Ids between the newest and this one are unknown here: the run starts again from it.
      this.run = [event];
    } else {
      this.run = [];
    }
    this.newest = Math.max(this.newest, event.id);
    if (this.run.length > 2 * KEEP) this.run = this.run.slice(-KEEP);
  }

  /**
   * Every event with an id above `after`, up to the newest this process announced, oldest first;
   * null if the run does not hold them all (the caller reads the log).
   */
  after(after: number): { events: readonly InstanceEvent[]; upTo: number } | null {
    const first = this.run[0]?.id;
    if (first === undefined || after < first - 1 || after > this.newest) return null;
    return { events: this.run.slice(after - first + 1), upTo: this.newest };
  }
}
