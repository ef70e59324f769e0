import { InjectQueue } from '@nestjs/bull';
import {
  BeforeApplicationShutdown,
  Injectable,
  Logger,
  OnApplicationShutdown,
} from '@nestjs/common';
import { OnEvent } from '@nestjs/event-emitter';
import type { Queue } from 'bull';
import type Redis from 'ioredis';
import { randomUUID } from 'node:crypto';
import { TurnBatch } from '../common/turn-batch';
import { AppConfig } from '../config/app-config';
import { QueueName } from '../queues/queues';
import { INSTANCE_EVENT, InstanceEventSignal } from '../state-machine/domain-events';
import type { InstanceEvent } from '../state-machine/instance-event.entity';
import { RecentEvents } from './recent-events';

/**
 * Says "look now" to a stream. `fromLog`: the new events may be another process's, so only a
 * read of the event log finds them; otherwise they are this process's, and `recentAfter` holds
 * them unless it answers null.
 */
type Wake = (fromLog: boolean) => void;

/**
 * Tells open event streams that new events may be stored. A stream sends events in the order of
 * the event log, so it can miss no event and repeat none; this says when to look. A change in
 * this process wakes streams at once, and they take the events from `recentAfter` where it can
 * vouch for them. A change in another process (PostgreSQL, APP_ROLE=worker) arrives through
 * Redis pub/sub, and the streams read the log; without Redis, streams still read it every
 * second. SQLite serves a single process, so there nothing is published.
 */
@Injectable()
export class EventStreamHub implements BeforeApplicationShutdown, OnApplicationShutdown {
  private readonly logger = new Logger(EventStreamHub.name);
  private readonly listeners = new Set<Wake>();
  private readonly streams = new Set<() => void>();
  private subscriber?: Redis;
  private readonly channel: string;
  /** Says which process a wake-up on the channel came from. */
  private readonly origin = randomUUID();
  /** Other processes may share the event log: PostgreSQL. */
  private readonly shared: boolean;
  private readonly recent = new RecentEvents();
  private readonly wakes = new TurnBatch<void>(() => {
    this.wakeAll(false);
    if (this.shared && this.queue.client.status === 'ready') {
      this.queue.client.publish(this.channel, this.origin).catch(() => undefined);
    }
  });

  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue,
    config: AppConfig,
  ) {
    this.channel = `${config.queuePrefix}:instance-events`;
    this.shared = config.databaseKind === 'postgres';
  }

  /**
   * The highest event id this process has announced: a read of the log that starts after this
   * call sees every event up to it (ids become visible in order), so it may look on from there.
   */
  newestAnnounced(): number {
    return this.recent.newestId;
  }

  /** This process's events after `after`, if it can vouch for every one (`RecentEvents`). */
  recentAfter(after: number): { events: readonly InstanceEvent[]; upTo: number } | null {
    return this.recent.after(after);
  }

  /**
   * Wakes `wake` whenever events may have been stored, and calls `end` when the app shuts down;
   * returns the unsubscribe.
   */
  subscribe(wake: Wake, end: () => void): () => void {
    this.listeners.add(wake);
    this.streams.add(end);
    this.ensureSubscribed();
    return () => {
      this.listeners.delete(wake);
      this.streams.delete(end);
    };
  }

  /**
   * Streams never end by themselves, and the HTTP server waits for open responses before it
   * closes: end them first. Clients reconnect, with Last-Event-ID, to a process that is up.
   */
  beforeApplicationShutdown(): void {
    for (const end of [...this.streams]) end();
  }

  /**
   * Events come in bursts (a commit shared by many transitions): the streams are woken, and the
   * other processes told, once per burst, on the next turn of the event loop.
   */
  @OnEvent(INSTANCE_EVENT)
  onEvent(event: InstanceEventSignal): void {
    this.recent.add(event);
    this.wakes.add();
  }

  onApplicationShutdown(): void {
    this.subscriber?.disconnect();
    this.listeners.clear();
  }

  private wakeAll(fromLog: boolean): void {
    for (const wake of this.listeners) wake(fromLog);
  }

  private ensureSubscribed(): void {
    if (this.subscriber || !this.shared) return;
    const subscriber = this.queue.client.duplicate();
    this.subscriber = subscriber;
    // This process's own bursts have woken its streams already.
    subscriber.on('message', (_channel: string, origin: string) => {
      if (origin !== this.origin) this.wakeAll(true);
    });
    subscriber.on('error', () => undefined);
    subscriber.subscribe(this.channel).catch((error: Error) => {
      this.logger.warn(`Event stream pub/sub unavailable, polling only: ${error.message}`);
    });
  }
}
