/**
 * The cloud a Provisor deployment drives. Drivers implement this behind `CLOUD_BACKEND`.
 *
 * Every mutating call carries the operation id; a driver must make a repeat of the same
 * operation (a job re-run after a crash) a no-op that answers as the first call did.
 */
export const CLOUD_BACKEND = Symbol('CLOUD_BACKEND');

export interface OperationContext {
  readonly operationId: string;
  readonly instanceId: string;
  /** Aborted when the operation has run longer than `JOB_TIMEOUT_MS`: stop, change nothing. */
  readonly signal: AbortSignal;
}

export interface VmSpec {
  readonly name: string;
  readonly flavor: string;
  readonly image: string;
}

export type VmPowerState = 'online' | 'offline';

export interface CloudBackend {
  provision(ctx: OperationContext, spec: VmSpec): Promise<{ backendId: string }>;
  start(ctx: OperationContext, backendId: string): Promise<void>;
  stop(ctx: OperationContext, backendId: string): Promise<void>;
  restart(ctx: OperationContext, backendId: string): Promise<void>;
  resize(ctx: OperationContext, backendId: string, flavor: string): Promise<void>;
  /** Succeeds when the VM is already gone. */
  delete(ctx: OperationContext, backendId: string): Promise<void>;
  /** What the VM really is, or null if the backend does not know it. */
  describe(ctx: OperationContext, backendId: string): Promise<{ state: VmPowerState } | null>;
}

/**
 * A failure the backend reported. `transient` ones (a busy host, a dropped connection) are worth
 * retrying; the rest fail the operation at once.
 */
export class BackendError extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
    this.name = 'BackendError';
  }
}
