import {
  ACTIONS,
  Action,
  INSTANCE_MACHINE,
  INSTANCE_STATES,
  InstanceState,
  TRANSITIONAL_STATES,
  actionOfState,
  canSchedule,
} from './instance.machine';

const S = InstanceState;

/** API.md section 4, written out by hand so the table cannot drift from the contract. */
const CONTRACT: Record<Action, { from: InstanceState[]; scheduled: string; inProgress: string }> = {
  provision: { from: [], scheduled: 'provisioning_scheduled', inProgress: 'provisioning' },
  start: { from: [S.Offline], scheduled: 'starting_scheduled', inProgress: 'starting' },
  stop: { from: [S.Online], scheduled: 'stopping_scheduled', inProgress: 'stopping' },
  restart: { from: [S.Online], scheduled: 'restarting_scheduled', inProgress: 'restarting' },
  resize: { from: [S.Offline], scheduled: 'resizing_scheduled', inProgress: 'resizing' },
  delete: { from: [S.Offline, S.Erred], scheduled: 'deletion_scheduled', inProgress: 'deleting' },
  pull: {
    from: [S.Online, S.Offline, S.Erred],
    scheduled: 'pulling_scheduled',
    inProgress: 'pulling',
  },
};

describe('instance state machine', () => {
  const pairs = INSTANCE_STATES.flatMap((state) =>
    ACTIONS.map((action) => [state, action] as const),
  );

  it.each(pairs)('from %s, %s is allowed exactly when API.md allows it', (state, action) => {
    expect(canSchedule(action, state)).toBe(CONTRACT[action].from.includes(state));
  });

  it.each(ACTIONS)('%s has the scheduled and in-progress states of API.md', (action) => {
    expect(INSTANCE_MACHINE[action].scheduled).toBe(CONTRACT[action].scheduled);
    expect(INSTANCE_MACHINE[action].inProgress).toBe(CONTRACT[action].inProgress);
  });

  it('ends each action where API.md says', () => {
    expect(INSTANCE_MACHINE.provision.success).toEqual({ kind: 'state', state: S.Online });
    expect(INSTANCE_MACHINE.start.success).toEqual({ kind: 'state', state: S.Online });
    expect(INSTANCE_MACHINE.stop.success).toEqual({ kind: 'state', state: S.Offline });
    expect(INSTANCE_MACHINE.restart.success).toEqual({ kind: 'state', state: S.Online });
    expect(INSTANCE_MACHINE.resize.success).toEqual({ kind: 'state', state: S.Offline });
    expect(INSTANCE_MACHINE.delete.success).toEqual({ kind: 'removed' });
    expect(INSTANCE_MACHINE.pull.success).toEqual({
      kind: 'reported',
      states: [S.Online, S.Offline],
    });
  });

  it('uses every state, and no state twice as a scheduled or in-progress state', () => {
    expect(new Set(TRANSITIONAL_STATES).size).toBe(TRANSITIONAL_STATES.length);
    const stable = INSTANCE_STATES.filter((s) => !TRANSITIONAL_STATES.includes(s));
    expect(stable.sort()).toEqual([S.Erred, S.Offline, S.Online].sort());
  });

  it('no action may start from a transitional state', () => {
    for (const action of ACTIONS) {
      for (const from of INSTANCE_MACHINE[action].from)
        expect(TRANSITIONAL_STATES).not.toContain(from);
    }
  });

  it('maps each transitional state back to its action', () => {
    for (const action of ACTIONS) {
      expect(actionOfState(INSTANCE_MACHINE[action].scheduled)).toBe(action);
      expect(actionOfState(INSTANCE_MACHINE[action].inProgress)).toBe(action);
    }
    expect(actionOfState(S.Online)).toBeUndefined();
    expect(actionOfState(S.Erred)).toBeUndefined();
  });

  it('only pull needs a backend id, and only delete is forced from erred', () => {
    expect(ACTIONS.filter((a) => INSTANCE_MACHINE[a].needsBackendId)).toEqual([Action.Pull]);
    expect(ACTIONS.filter((a) => INSTANCE_MACHINE[a].forcedFromErred)).toEqual([Action.Delete]);
  });
});
