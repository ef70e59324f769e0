import { Logger } from '@nestjs/common';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Actor } from '../auth/actor';
import type { InstanceEvent } from '../state-machine/instance-event.entity';
import { EventDto } from './dto/event.dto';
import type { EventStreamHub } from './event-stream.service';
import type { EventsService } from './events.service';

const BATCH = 500;
/** A look at the log even without a wake-up: events of other processes while Redis is down. */
const POLL_MS = 1_000;
/** A comment line now and then keeps proxies from closing an idle stream. */
const HEARTBEAT_MS = 15_000;

export interface StreamOptions {
  actor: Actor;
  instanceId?: string;
  /** The last event id the client has; only later events are sent. */
  after: number;
  /** Headers already set for the response (CORS, rate limit), sent with the stream's own. */
  headers?: OutgoingHttpHeaders;
}

/**
 * One client's Server-Sent Events stream. It sends the events after the last id it looked
 * through, from the event log, or from this process's recent events where those can vouch for
 * every id (`EventStreamHub.recentAfter`), so resuming from `Last-Event-ID` has no gap and no
 * duplicate. It holds no queue of its own: while the client is slow to read, it waits for the
 * socket to drain before reading more.
 */
export function openEventStream(
  req: IncomingMessage & { log?: { child(bindings: object): Pick<Logger, 'warn'> } },
  res: ServerResponse,
  options: StreamOptions,
  events: EventsService,
  hub: EventStreamHub,
  logger: Logger,
): void {
  let last = options.after;
  let reading = false;
  let again = false;
  let closed = false;
  // The client going away ends the stream; its errors (a reset connection) are that and no more.
  req.on('error', () => undefined);
  res.on('error', () => undefined);
  const closedSignal = new Promise<void>((resolve) => {
    req.once('close', resolve);
    res.once('close', resolve);
  });

  res.writeHead(200, {
    ...options.headers,
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  res.write('retry: 2000\n\n');

  /** Whether the next look must read the event log (see `EventStreamHub`'s wake-ups). */
  let logDue = true;
  /**
   * The next events to send, and the id the stream has then looked through if that is past the
   * last event's (events the caller may not see were looked at too).
   */
  const nextBatch = async (): Promise<{ batch: readonly InstanceEvent[]; upTo?: number }> => {
    const recent = logDue ? null : hub.recentAfter(last);
    if (recent) {
      const shown = recent.events.filter((event) => events.shows(event, options, options.actor));
      if (shown.length <= BATCH) return { batch: shown, upTo: recent.upTo };
      again = true;
      return { batch: shown.slice(0, BATCH) };
    }
    logDue = false;
    // Events up to this id are all in what the read sees: the stream looks on from there even
    // if none of them is the caller's, so that its next look can be from memory.
    const announced = hub.newestAnnounced();
    const batch = await events.list(
      { instanceId: options.instanceId, after: last, limit: BATCH },
      options.actor,
    );
    if (batch.length === BATCH) {
      again = true;
      return { batch };
    }
    return { batch, upTo: announced };
  };

  const pump = async (fromLog = true): Promise<void> => {
    if (closed) return;
    if (fromLog) logDue = true;
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        const { batch, upTo } = await nextBatch();
        // Events go out a buffer at a time, not one socket write each; a slow client is waited
        // for (drain) after each buffer, so a stream holds at most about one buffer unsent.
        let chunk = '';
        for (let i = 0; i < batch.length; i++) {
          const event = batch[i];
          chunk += `id: ${event.id}\ndata: ${JSON.stringify(EventDto.of(event))}\n\n`;
          if (chunk.length < res.writableHighWaterMark && i < batch.length - 1) continue;
          if (closed) return;
          const fits = res.write(chunk);
          chunk = '';
          last = event.id;
          if (!fits) await Promise.race([new Promise((r) => res.once('drain', r)), closedSignal]);
        }
        if (upTo !== undefined) last = Math.max(last, upTo);
      } while (again && !closed);
    } catch (error) {
      // On the request's own logger (pino-http's `req.log`): the line names the request.
      const log: Pick<Logger, 'warn'> = req.log?.child({ context: 'EventStream' }) ?? logger;
      log.warn(`Event stream read failed: ${(error as Error).message}`);
    } finally {
      reading = false;
    }
  };

  const unsubscribe = hub.subscribe(
    (fromLog) => void pump(fromLog),
    () => res.end(),
  );
  const poll = setInterval(() => void pump(), POLL_MS);
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
  void closedSignal.then(() => {
    closed = true;
    clearInterval(poll);
    clearInterval(heartbeat);
    unsubscribe();
  });
  void pump();
}
