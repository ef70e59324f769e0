import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { bodyRefusalOf } from './json-body.parser';

/**
 * Answers a request whose body was refused (not JSON, malformed, or holding what no route takes:
 * `refuseBody`) with that refusal, once the guards before it let the request through: global,
 * after the token and staff checks and the rate limit (`AuthModule`), so a caller learns who
 * may ask before what to send.
 */
@Injectable()
export class BodyRefusalGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const refusal = bodyRefusalOf(context.switchToHttp().getRequest<object>());
    if (refusal) throw refusal;
    return true;
  }
}
