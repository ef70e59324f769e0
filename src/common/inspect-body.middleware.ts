import type { NextFunction, Request, Response } from 'express';

/** Deeper than any body of the API needs; far below what recursive validation can take. */
export const MAX_BODY_DEPTH = 32;

/**
 * Names every object answers to through its prototype (`__proto__`, `constructor`, `valueOf`…):
 * never a field of the API, and validation would take them for known ones.
 */
const PROTOTYPE_KEYS = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);

/**
 * Refuses, before anything reads them, requests no route can use: a body that is not JSON, a
 * body nested past `MAX_BODY_DEPTH`, text with a NUL character (PostgreSQL cannot store it,
 * so both databases refuse it alike), and prototype names such as `__proto__`, which validation
 * would not see as unknown fields.
 */
export function inspectBody(req: Request, res: Response, next: NextFunction): void {
  const refuse = (status: number, error: string, message: string) =>
    void res.status(status).json({ statusCode: status, error, message });

  if (hasBody(req) && !req.is('application/json')) {
    return refuse(
      415,
      'Unsupported Media Type',
      'Send the request body as JSON, with Content-Type: application/json',
    );
  }
  if (/%00/i.test(req.originalUrl)) {
    return refuse(400, 'Bad Request', 'Text must not contain NUL (\\u0000) characters');
  }
  const problem = inspect(req.body);
  if (problem === 'deep') {
    return refuse(
      400,
      'Bad Request',
      `Request body is nested deeper than ${MAX_BODY_DEPTH} levels`,
    );
  }
  if (problem === 'nul') {
    return refuse(400, 'Bad Request', 'Text must not contain NUL (\\u0000) characters');
  }
  if (problem) {
    return refuse(400, 'Bad Request', `property ${problem.slice(4)} should not exist`);
  }
  next();
}

function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
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
