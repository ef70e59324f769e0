import { AsyncLocalStorage } from 'node:async_hooks';

/** The request a piece of work was started by, for logs that follow it into the worker. */
const storage = new AsyncLocalStorage<{ requestId: string }>();

export const RequestContext = {
  run<T>(requestId: string, work: () => T): T {
    return storage.run({ requestId }, work);
  },
  /** The id of the request being served, if any. */
  requestId(): string | undefined {
    return storage.getStore()?.requestId;
  },
};
