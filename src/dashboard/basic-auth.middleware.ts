import type { NextFunction, Request, Response } from 'express';
import type { Queue } from 'bull';
import type { UsersService } from '../auth/users.service';

/**
 * HTTP Basic in front of the queue dashboard: a staff user's username and API token. Anything
 * else is a `401` with a challenge, so a browser asks for the credentials. A `503` while Redis
 * is unreachable.
 */
export function staffBasicAuth(users: UsersService, queue: Queue) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const credentials = parseBasic(req.headers.authorization);
    const deny = () => {
      res.setHeader('WWW-Authenticate', 'Basic realm="Provisor queues", charset="UTF-8"');
      res.status(401).type('text/plain').send('Staff username and API token required');
    };
    // Without Redis the dashboard's reads would hang; say so at once instead.
    const pass = () =>
      queue.client.status === 'ready'
        ? next()
        : void res
            .status(503)
            .type('text/plain')
            .send(
              `Redis is unreachable (connection ${queue.client.status}); the queues cannot be shown`,
            );
    if (!credentials) return deny();
    users.authenticateStaff(credentials.username, credentials.password).then(
      (actor) => (actor ? pass() : deny()),
      (error) => next(error),
    );
  };
}

function parseBasic(header?: string): { username: string; password: string } | null {
  const match = header && /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!match) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
