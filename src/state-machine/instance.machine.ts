/**
 * The instance state machine as data. Every action names the states it may start from, the
 * `*_scheduled` state a request moves it to, the in-progress state a worker moves it to, and where
 * success leaves it. Nothing else in Provisor decides whether a transition is allowed.
 */
export enum InstanceState {
  ProvisioningScheduled = 'provisioning_scheduled',
  Provisioning = 'provisioning',
  Online = 'online',
  Offline = 'offline',
  StartingScheduled = 'starting_scheduled',
  Starting = 'starting',
  StoppingScheduled = 'stopping_scheduled',
  Stopping = 'stopping',
  RestartingScheduled = 'restarting_scheduled',
  Restarting = 'restarting',
  ResizingScheduled = 'resizing_scheduled',
  Resizing = 'resizing',
  DeletionScheduled = 'deletion_scheduled',
  Deleting = 'deleting',
  PullingScheduled = 'pulling_scheduled',
  Pulling = 'pulling',
  Erred = 'erred',
}

export const INSTANCE_STATES: readonly InstanceState[] = Object.values(InstanceState);

export enum Action {
  Provision = 'provision',
  Start = 'start',
  Stop = 'stop',
  Restart = 'restart',
  Resize = 'resize',
  Delete = 'delete',
  Pull = 'pull',
}

export const ACTIONS: readonly Action[] = Object.values(Action);

/** Where a successful operation leaves the instance. */
export type Outcome =
  | { kind: 'state'; state: InstanceState }
  /** The backend decides (pull): one of these. */
  | { kind: 'reported'; states: readonly InstanceState[] }
  /** The record is removed. */
  | { kind: 'removed' };

export interface ActionSpec {
  /** States a request may come from; empty for provision, which creates the record. */
  readonly from: readonly InstanceState[];
  readonly scheduled: InstanceState;
  readonly inProgress: InstanceState;
  readonly success: Outcome;
  /** The backend must know the VM already (`backend_id` set), or the request is a `400`. */
  readonly needsBackendId?: boolean;
  /** From `erred` a failure of this action does not leave the record erred again. */
  readonly forcedFromErred?: boolean;
}

const S = InstanceState;

export const INSTANCE_MACHINE: Readonly<Record<Action, ActionSpec>> = {
  [Action.Provision]: {
    from: [],
    scheduled: S.ProvisioningScheduled,
    inProgress: S.Provisioning,
    success: { kind: 'state', state: S.Online },
  },
  [Action.Start]: {
    from: [S.Offline],
    scheduled: S.StartingScheduled,
    inProgress: S.Starting,
    success: { kind: 'state', state: S.Online },
  },
  [Action.Stop]: {
    from: [S.Online],
    scheduled: S.StoppingScheduled,
    inProgress: S.Stopping,
    success: { kind: 'state', state: S.Offline },
  },
  [Action.Restart]: {
    from: [S.Online],
    scheduled: S.RestartingScheduled,
    inProgress: S.Restarting,
    success: { kind: 'state', state: S.Online },
  },
  [Action.Resize]: {
    from: [S.Offline],
    scheduled: S.ResizingScheduled,
    inProgress: S.Resizing,
    success: { kind: 'state', state: S.Offline },
  },
  [Action.Delete]: {
    from: [S.Offline, S.Erred],
    scheduled: S.DeletionScheduled,
    inProgress: S.Deleting,
    success: { kind: 'removed' },
    forcedFromErred: true,
  },
  [Action.Pull]: {
    from: [S.Online, S.Offline, S.Erred],
    scheduled: S.PullingScheduled,
    inProgress: S.Pulling,
    success: { kind: 'reported', states: [S.Online, S.Offline] },
    needsBackendId: true,
  },
};

/** States a user may edit the name and description in, and set_ok may force. */
export const STABLE_STATES: readonly InstanceState[] = [S.Online, S.Offline];

/** `*_scheduled` and in-progress states: an operation owns the instance. */
export const TRANSITIONAL_STATES: readonly InstanceState[] = ACTIONS.flatMap((a) => [
  INSTANCE_MACHINE[a].scheduled,
  INSTANCE_MACHINE[a].inProgress,
]);

/** The action whose scheduled or in-progress state this is, if any. */
export function actionOfState(state: InstanceState): Action | undefined {
  return ACTIONS.find(
    (a) => INSTANCE_MACHINE[a].scheduled === state || INSTANCE_MACHINE[a].inProgress === state,
  );
}

export function canSchedule(action: Action, state: InstanceState): boolean {
  return INSTANCE_MACHINE[action].from.includes(state);
}
