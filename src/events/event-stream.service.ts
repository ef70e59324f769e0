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
import { INSTANCE_EVENT } from '../state-machine/domain-events';

type Wake = () => void;

/**
 * Tells open event streams that new events may be stored. The events themselves are always read
 * from the event log, so a stream can miss no event and repeat none; this only says "look now".
 * A change in this process wakes streams at once; one in another process (APP_ROLE=worker)
 * arrives through Redis pub/sub; without Redis, streams still look every second.
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
  private readonly wakes = new TurnBatch<void>(() => {
    this.wakeAll();
    if (this.queue.client.status === 'ready') {
      this.queue.client.publish(this.channel, this.origin).catch(() => undefined);
    }
  });

  constructor(
    @InjectQueue(QueueName.InstanceOperations) private readonly queue: Queue,
    config: AppConfig,
  ) {
    this.channel = `${config.queuePrefix}:instance-events`;
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
  onEvent(): void {
    this.wakes.add();
  }

  onApplicationShutdown(): void {
    this.subscriber?.disconnect();
    this.listeners.clear();
  }

  private wakeAll(): void {
    for (const wake of this.listeners) wake();
  }

  private ensureSubscribed(): void {
    if (this.subscriber) return;
    const subscriber = this.queue.client.duplicate();
    this.subscriber = subscriber;
    // This process's own bursts have woken its streams already.
    subscriber.on('message', (_channel: string, origin: string) => {
      if (origin !== this.origin) this.wakeAll();
    });
    subscriber.on('error', () => undefined);
    subscriber.subscribe(this.channel).catch((error: Error) => {
      this.logger.warn(`Event stream pub/sub unavailable, polling only: ${error.message}`);
    });
  }
}
