import type { NextFunction, Request, Response } from 'express';

/**
 * Text with a NUL character is refused up front, on every route and both databases alike:
 * PostgreSQL cannot store it, and no name, description or message needs it.
 */
export function rejectNulCharacters(req: Request, res: Response, next: NextFunction): void {
  if (/%00/i.test(req.originalUrl) || hasNul(req.body)) {
    res.status(400).json({
      statusCode: 400,
      error: 'Bad Request',
      message: 'Text must not contain NUL (\\u0000) characters',
    });
    return;
  }
  next();
}

function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value && typeof value === 'object') {
    return Object.entries(value).some(([key, item]) => key.includes('\u0000') || hasNul(item));
  }
  return false;
}
