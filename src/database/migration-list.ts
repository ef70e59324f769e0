import { InitialSchema1764000000000 } from './migrations/1764000000000-initial-schema';
import { InstanceCounts1764100000000 } from './migrations/1764100000000-instance-counts';
import { ListOrderIndexes1764200000000 } from './migrations/1764200000000-list-order-indexes';

/** Every migration, oldest first. Imported as classes so the built app needs no glob. */
export const MIGRATIONS = [
  InitialSchema1764000000000,
  InstanceCounts1764100000000,
  ListOrderIndexes1764200000000,
];
