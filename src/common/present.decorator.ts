import { ValidateIf } from 'class-validator';

/**
 * An optional field that, when sent, must hold a value: unlike `@IsOptional()`, `null` is
 * validated (and refused) rather than skipped.
 */
export const OptionalButNotNull = () => ValidateIf((_object, value) => value !== undefined);
