import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../common/api-errors.decorator';
import type { Actor } from './actor';
import { CurrentUser, Staff } from './auth.decorators';
import { CreatedUserDto, CreateUserDto, MeDto } from './dto/user.dto';
import { UsersService } from './users.service';

@ApiTags('users')
@ApiBearerAuth()
@Controller('api/users')
export class UsersController {
  constructor(private readonly users: UsersService) {}

  @Post()
  @Staff()
  @HttpCode(201)
  @ApiOperation({ operationId: 'createUser', summary: 'Create a user and its API token (staff)' })
  @ApiResponse({ status: 201, type: CreatedUserDto })
  @ApiErrors(400, 401, 403, 409)
  async create(@Body() body: CreateUserDto): Promise<CreatedUserDto> {
    const { user, token } = await this.users.create(body.username, body.is_staff ?? false);
    return CreatedUserDto.withToken(user, token);
  }

  @Get('me')
  @ApiOperation({ operationId: 'getMe', summary: 'The user the token belongs to' })
  @ApiResponse({ status: 200, type: MeDto })
  @ApiErrors(401)
  me(@CurrentUser() actor: Actor): MeDto {
    return MeDto.of(actor);
  }
}
