import type { Logger } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EventEmitter } from 'node:events';
import type { Actor } from '../auth/actor';
import type { InstanceEvent } from '../state-machine/instance-event.entity';
import { openEventStream } from './event-stream';
import type { EventStreamHub } from './event-stream.service';
import { EventsService } from './events.service';

const actor: Actor = { id: '00000000-0000-4000-8000-000000000001', isStaff: false } as Actor;

function event(id: number, ownerId = actor.id): InstanceEvent {
  return {
    id,
    type: 'instance.stop.succeeded',
    instanceId: '00000000-0000-4000-8000-0000000000aa',
    ownerId,
    state: 'offline',
    errorMessage: '',
    at: new Date('2026-11-25T00:00:00Z'),
  };
}

/**
 * A stream on fake request, response, log and hub; `wake` is what a committed change calls
 * (`fromLog`: another process's), and `recent` what the hub holds of this process's events.
 */
function open(
  pages: InstanceEvent[][],
  socket = { highWaterMark: 16384, full: false },
  recent: InstanceEvent[] = [],
) {
  const req = new EventEmitter() as unknown as IncomingMessage;
  const chunks: string[] = [];
  const res = Object.assign(new EventEmitter(), {
    writableHighWaterMark: socket.highWaterMark,
    writeHead: jest.fn(),
    // false: the socket's buffer is full, and 'drain' will say when it has room.
    write: jest.fn((chunk: string) => chunks.push(chunk) > 0 && !socket.full),
    end: jest.fn(),
  }) as unknown as ServerResponse;
  const list = jest.fn(async () => pages.shift() ?? []);
  let wake: (fromLog: boolean) => void = () => undefined;
  const recentAfter = jest.fn((after: number) => {
    const first = recent[0]?.id;
    if (first === undefined || after < first - 1) return null;
    return { events: recent.filter((e) => e.id > after), upTo: recent[recent.length - 1].id };
  });
  const hub = {
    subscribe: (onWake: (fromLog: boolean) => void) => {
      wake = onWake;
      return () => undefined;
    },
    recentAfter,
    newestAnnounced: () => recent[recent.length - 1]?.id ?? 0,
  } as unknown as EventStreamHub;
  const service = { list, shows: EventsService.prototype.shows } as unknown as EventsService;
  openEventStream(req, res, { actor, after: 0 }, service, hub, {
    warn: jest.fn(),
  } as unknown as Logger);
  return {
    list,
    recentAfter,
    events: () => chunks.filter((c) => c.startsWith('id: ')),
    sentIds: () => chunks.flatMap((c) => c.match(/^id: \d+$/gm) ?? []),
    wake: (fromLog = false) => wake(fromLog),
    drain: () => res.emit('drain'),
    close: () => req.emit('close'),
  };
}

/** Lets the stream's awaited reads and writes run. */
const settle = () => jest.advanceTimersByTimeAsync(0);

describe('openEventStream', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('sends a read batch of events in one write, in order', async () => {
    const stream = open([[event(1), event(2), event(3)]]);
    await settle();
    expect(stream.events()).toHaveLength(1);
    expect(stream.events()[0].match(/^id: \d+$/gm)).toEqual(['id: 1', 'id: 2', 'id: 3']);
    stream.close();
  });

  it('writes a buffer at a time, and waits for a full socket to drain before the next', async () => {
    const socket = { highWaterMark: 100, full: true };
    const stream = open([[event(1), event(2), event(3)]], socket);
    await settle();
    expect(stream.events()).toHaveLength(1); // one event fills a 100-byte buffer
    await jest.advanceTimersByTimeAsync(100);
    expect(stream.events()).toHaveLength(1);
    socket.full = false;
    stream.drain();
    await settle();
    expect(stream.events().map((c) => c.match(/^id: (\d+)$/m)![1])).toEqual(['1', '2', '3']);
    stream.close();
  });

  it('stops writing when the client goes away while it waits for the socket', async () => {
    const stream = open([[event(1), event(2)]], { highWaterMark: 100, full: true });
    await settle();
    stream.close();
    stream.drain();
    await settle();
    expect(stream.events()).toHaveLength(1);
  });

  it('reads on at once after a full batch of 500, from the last id sent', async () => {
    const full = Array.from({ length: 500 }, (_, i) => event(i + 1));
    const stream = open([full, [event(501)]]);
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(2);
    expect(stream.list.mock.calls[1]).toEqual([expect.objectContaining({ after: 500 }), actor]);
    const ids = stream.events().flatMap((c) => c.match(/^id: \d+$/gm)!);
    expect(ids).toEqual(Array.from({ length: 501 }, (_, i) => `id: ${i + 1}`));
    stream.close();
  });

  it('reads again at once when a change is announced during a read', async () => {
    const stream = open([[event(1)], [event(2)]]);
    stream.wake(); // while the first read is in flight
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(2);
    expect(stream.events()).toHaveLength(2);
    stream.close();
  });

  it("takes this process's events from memory, those the caller may see, and looks on from the newest", async () => {
    const other = '00000000-0000-4000-8000-000000000002';
    const recent: InstanceEvent[] = [];
    const stream = open([[event(1)], []], undefined, recent);
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(1); // the first look reads the log
    recent.push(event(2), event(3, other), event(4)); // announced since
    stream.wake();
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(1);
    expect(stream.recentAfter).toHaveBeenLastCalledWith(1);
    expect(stream.sentIds()).toEqual(['id: 1', 'id: 2', 'id: 4']);
    recent.push(event(5, other));
    stream.wake();
    await settle();
    expect(stream.recentAfter).toHaveBeenLastCalledWith(4);
    expect(stream.sentIds()).toEqual(['id: 1', 'id: 2', 'id: 4']);
    stream.wake(true); // another process's events: the log, from the newest id looked through
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(2);
    expect(stream.list.mock.calls[1]).toEqual([expect.objectContaining({ after: 5 }), actor]);
    stream.close();
  });

  it('reads the log when memory cannot vouch for every event after the last one sent', async () => {
    const recent: InstanceEvent[] = [];
    const stream = open([[event(1)], [event(2), event(3)]], undefined, recent);
    await settle();
    recent.push(event(3));
    stream.wake(); // memory holds 3 only: 2 may exist (another process's)
    await settle();
    expect(stream.recentAfter).toHaveBeenLastCalledWith(1);
    expect(stream.list).toHaveBeenCalledTimes(2);
    expect(stream.list.mock.calls[1]).toEqual([expect.objectContaining({ after: 1 }), actor]);
    expect(stream.sentIds()).toEqual(['id: 1', 'id: 2', 'id: 3']);
    stream.close();
  });

  it('reads the log when another process wakes it during a read from memory', async () => {
    const recent: InstanceEvent[] = [];
    const stream = open([[event(1)], [event(3)]], undefined, recent);
    await settle();
    recent.push(event(2));
    stream.wake();
    stream.wake(true); // arrives while the first wake's look is under way
    await settle();
    expect(stream.list).toHaveBeenCalledTimes(2);
    expect(stream.list.mock.calls[1]).toEqual([expect.objectContaining({ after: 2 }), actor]);
    expect(stream.sentIds()).toEqual(['id: 1', 'id: 2', 'id: 3']);
    stream.close();
  });

  it("looks on from this process's newest event after a read of the log that shows none of them", async () => {
    const other = '00000000-0000-4000-8000-000000000002';
    // The caller's last event is old; the newest this process announced are another owner's.
    const recent = [event(40, other), event(41, other)];
    const stream = open([[event(7)]], undefined, recent);
    await settle();
    expect(stream.sentIds()).toEqual(['id: 7']);
    recent.push(event(42));
    stream.wake();
    await settle();
    // From memory: the read above saw everything up to 41.
    expect(stream.recentAfter).toHaveBeenLastCalledWith(41);
    expect(stream.list).toHaveBeenCalledTimes(1);
    expect(stream.sentIds()).toEqual(['id: 7', 'id: 42']);
    stream.close();
  });
});
