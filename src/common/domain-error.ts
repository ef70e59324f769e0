/**
 * Errors the domain raises, by code. One exception filter maps the codes to HTTP statuses, so no
 * service knows about HTTP and no controller catches.
 */
export enum DomainErrorCode {
  NotFound = 'not_found',
  InvalidTransition = 'invalid_transition',
  Conflict = 'conflict',
  BadRequest = 'bad_request',
  Forbidden = 'forbidden',
  Unprocessable = 'unprocessable',
}

export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'DomainError';
  }

  static notFound(what: string): DomainError {
    return new DomainError(DomainErrorCode.NotFound, `${what} not found`);
  }
}
