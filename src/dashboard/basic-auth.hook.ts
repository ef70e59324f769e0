import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Queue } from 'bull';
import type { UsersService } from '../auth/users.service';
import { ErrorLog, toErrorBody } from '../common/all-exceptions.filter';
import { isUnder } from '../common/routes';

/**
 * An `onRequest` hook: staff only, on every route Fastify matched under `route` (the dashboard's
 * page, its files and its JSON API), so no spelling of a path reaches one of them past it. The
 * dashboard's routes are bull-board's, outside Nest's filters: a failure here (the database
 * gone) is answered and logged as the API's own are.
 */
export function staffOnlyUnder(route: string, users: UsersService, queue: Queue, logger: ErrorLog) {
  const auth = staffBasicAuth(users, queue);
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (!isUnder(request.routeOptions.url, route)) return;
    try {
      // A hook that answers returns the reply, so that Fastify goes no further.
      if (await auth(request, reply)) return reply;
    } catch (error) {
      const body = toErrorBody(error, (request.raw as { log?: ErrorLog }).log ?? logger);
      return reply.code(body.statusCode).type('application/json; charset=utf-8').send(body);
    }
  };
}

/**
 * HTTP Basic: a staff user's username and API token. Anything else is a `401` with a challenge,
 * so a browser asks for the credentials. A `503` while Redis is unreachable. True when it
 * answered the request.
 */
function staffBasicAuth(users: UsersService, queue: Queue) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<boolean> => {
    const credentials = parseBasic(request.headers.authorization);
    const actor =
      credentials && (await users.authenticateStaff(credentials.username, credentials.password));
    if (!actor) {
      void reply
        .code(401)
        .header('WWW-Authenticate', 'Basic realm="Provisor queues", charset="UTF-8"')
        .type('text/plain; charset=utf-8')
        .send('Staff username and API token required');
      return true;
    }
    // Without Redis the dashboard's reads would hang; say so at once instead.
    if (queue.client.status !== 'ready') {
      void reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .send(
          `Redis is unreachable (connection ${queue.client.status}); the queues cannot be shown`,
        );
      return true;
    }
    return false;
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
