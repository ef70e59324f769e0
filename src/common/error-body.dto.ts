import { ApiProperty } from '@nestjs/swagger';

/** Every error answer: NestJS's shape. */
export class ErrorBodyDto {
  @ApiProperty({ type: 'integer', example: 409 })
  statusCode: number;

  @ApiProperty({ example: 'Conflict' })
  error: string;

  @ApiProperty({
    oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }],
    example: "Cannot start instance in state 'online'; allowed from: offline",
  })
  message: string | string[];
}
