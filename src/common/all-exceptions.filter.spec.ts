import type { ArgumentsHost } from '@nestjs/common';
import { BadRequestException, Logger } from '@nestjs/common';
import { AllExceptionsFilter } from './all-exceptions.filter';

/** A host whose request has pino-http's `req.log`, or none, and a response that records. */
function hostWith(requestLog?: { child: jest.Mock }) {
  const response = {
    headersSent: false,
    status: jest.fn().mockReturnThis(),
    json: jest.fn().mockReturnThis(),
  };
  const host = {
    switchToHttp: () => ({
      getRequest: () => (requestLog ? { log: requestLog } : {}),
      getResponse: () => response,
    }),
  } as unknown as ArgumentsHost;
  return { host, response };
}

describe('AllExceptionsFilter', () => {
  it("logs an unexpected error's stack on the request's own logger, and answers a bare 500", () => {
    const bound = { error: jest.fn() };
    const requestLog = { child: jest.fn().mockReturnValue(bound) };
    const { host, response } = hostWith(requestLog);

    new AllExceptionsFilter().catch(new Error('disk on fire'), host);

    expect(requestLog.child).toHaveBeenCalledWith({ context: 'HttpErrors' });
    expect(bound.error).toHaveBeenCalledWith(expect.stringContaining('Error: disk on fire\n'));
    expect(response.status).toHaveBeenCalledWith(500);
    expect(response.json).toHaveBeenCalledWith({
      statusCode: 500,
      error: 'Internal Server Error',
      message: 'Internal server error',
    });
  });

  it("falls back to Nest's logger where the request has none", () => {
    const error = jest.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    try {
      const { host, response } = hostWith();
      new AllExceptionsFilter().catch(new Error('no request logger'), host);
      expect(error).toHaveBeenCalledWith(expect.stringContaining('no request logger'));
      expect(response.status).toHaveBeenCalledWith(500);
    } finally {
      error.mockRestore();
    }
  });

  it("logs nothing for a client's mistake", () => {
    const requestLog = { child: jest.fn() };
    const { host, response } = hostWith(requestLog);
    new AllExceptionsFilter().catch(new BadRequestException('name must not be empty'), host);
    expect(requestLog.child).not.toHaveBeenCalled();
    expect(response.status).toHaveBeenCalledWith(400);
  });
});
