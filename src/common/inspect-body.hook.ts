import type { FastifyRequest } from 'fastify';
import { BodyError, bodyRefusalOf, refuseBody } from './json-body.parser';

/** Deeper than any body of the API needs; far below what recursive validation can take. */
export const MAX_BODY_DEPTH = 32;

/**
 * Names every object answers to through its prototype (`__proto__`, `constructor`, `valueOf`…):
 * never a field of the API, and validation would take them for known ones.
 */
const PROTOTYPE_KEYS = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);

/**
 * Refuses, as a `preValidation` hook (the body parsed, no guard or handler run yet), requests
 * no route can use: a body nested past `MAX_BODY_DEPTH`, text with a NUL character (PostgreSQL
 * cannot store it, so both databases refuse it alike), and prototype names such as `__proto__`,
 * which validation would not see as unknown fields. A body the parser refused (not JSON, or
 * malformed: `registerJsonBody`) arrives here as none, its refusal kept.
 *
 * Like the parser's, the refusal waits for the API's guards to know the caller (`refuseBody`),
 * except on routes no guard of Nest's runs for (`answeredAtOnce`, given the route the request
 * matched, however its path was spelled: the queue dashboard, Swagger UI), where this hook
 * answers it, the parser's included.
 */
export function inspectBody(answeredAtOnce: (route: string | undefined) => boolean) {
  return (request: FastifyRequest, _reply: unknown, done: (error?: Error) => void): void => {
    const refusal = refusalOf(request);
    if (refusal) refuseBody(request, refusal);
    const kept = bodyRefusalOf(request);
    if (kept && answeredAtOnce(request.routeOptions.url)) done(kept);
    else done();
  };
}

function refusalOf(request: FastifyRequest): BodyError | null {
  if (/%00/i.test(request.url)) {
    return new BodyError(400, 'Text must not contain NUL (\\u0000) characters');
  }
  const problem = inspect(request.body);
  if (problem === 'deep') {
    return new BodyError(400, `Request body is nested deeper than ${MAX_BODY_DEPTH} levels`);
  }
  if (problem === 'nul') {
    return new BodyError(400, 'Text must not contain NUL (\\u0000) characters');
  }
  return problem ? new BodyError(400, `property ${problem.slice(4)} should not exist`) : null;
}

/** Walks the parsed body without recursion, so no body can exhaust the stack here. */
function inspect(body: unknown): string | null {
  const stack: [unknown, number][] = [[body, 0]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop()!;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) return 'nul';
    } else if (value !== null && typeof value === 'object') {
      if (depth >= MAX_BODY_DEPTH) return 'deep';
      for (const [key, item] of Object.entries(value)) {
        if (key.includes('\u0000')) return 'nul';
        if (PROTOTYPE_KEYS.has(key)) return `key:${key}`;
        stack.push([item, depth + 1]);
      }
    }
  }
  return null;
}
