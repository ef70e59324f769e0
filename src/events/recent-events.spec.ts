import type { InstanceEvent } from '../state-machine/instance-event.entity';
import { RecentEvents } from './recent-events';

function event(id: number): InstanceEvent {
  return { id } as InstanceEvent;
}

const ids = (answer: { events: readonly InstanceEvent[] } | null) =>
  answer && answer.events.map((e) => e.id);

describe('RecentEvents', () => {
  it('answers nothing before it has seen an event', () => {
    expect(new RecentEvents().after(0)).toBeNull();
  });

  it('answers every event after a cursor inside its run, and how far it has looked', () => {
    const recent = new RecentEvents();
    [7, 8, 9, 10].forEach((id) => recent.add(event(id)));
    expect(ids(recent.after(6))).toEqual([7, 8, 9, 10]);
    expect(ids(recent.after(8))).toEqual([9, 10]);
    expect(recent.after(10)).toEqual({ events: [], upTo: 10 });
    expect(recent.after(9)?.upTo).toBe(10);
  });

  it('sends a cursor before its run, or past its newest event, to the log', () => {
    const recent = new RecentEvents();
    [7, 8].forEach((id) => recent.add(event(id)));
    expect(recent.after(5)).toBeNull(); // event 6 may exist: only the log knows
    expect(recent.after(9)).toBeNull(); // the stream read further, in the log: another process's
  });

  it('starts a new run after a gap, and answers only from there', () => {
    const recent = new RecentEvents();
    [1, 2, 3].forEach((id) => recent.add(event(id)));
    recent.add(event(6)); // 4 and 5 are another process's, or ids the sequence skipped
    expect(recent.after(2)).toBeNull();
    expect(recent.after(3)).toBeNull();
    expect(ids(recent.after(5))).toEqual([6]);
    recent.add(event(7));
    expect(ids(recent.after(5))).toEqual([6, 7]);
  });

  it('answers nothing once an event arrives out of order, until the next one in order', () => {
    const recent = new RecentEvents();
    [1, 2].forEach((id) => recent.add(event(id)));
    recent.add(event(4));
    recent.add(event(3)); // two commits acknowledged in the other order
    // A stream at 3 has not been sent 4, and a stream at 2 must get both: the log says.
    expect(recent.after(2)).toBeNull();
    expect(recent.after(3)).toBeNull();
    expect(recent.after(4)).toBeNull();
    recent.add(event(5));
    expect(ids(recent.after(4))).toEqual([5]);
    expect(recent.after(3)).toBeNull();
  });

  it('keeps the newest events only, and sends a cursor behind them to the log', () => {
    const recent = new RecentEvents();
    for (let id = 1; id <= 5000; id++) recent.add(event(id));
    expect(recent.after(0)).toBeNull();
    expect(ids(recent.after(4990))).toEqual([
      4991, 4992, 4993, 4994, 4995, 4996, 4997, 4998, 4999, 5000,
    ]);
  });
});
