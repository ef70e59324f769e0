import { ApiProperty } from '@nestjs/swagger';
import { IsBoolean, IsString, Matches } from 'class-validator';
import { OptionalButNotNull } from '../../common/present.decorator';
import type { User } from '../user.entity';

export const USERNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export class CreateUserDto {
  @ApiProperty({ example: 'alice', pattern: USERNAME_PATTERN.source, minLength: 1, maxLength: 63 })
  @IsString({ message: 'username must be a string' })
  @Matches(USERNAME_PATTERN, {
    message:
      "username must be 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
  })
  username: string;

  @ApiProperty({ required: false, example: false, description: 'Default: false' })
  @OptionalButNotNull()
  @IsBoolean({ message: 'is_staff must be true or false' })
  is_staff?: boolean;
}

export class MeDto {
  @ApiProperty({ format: 'uuid' })
  id: string;

  @ApiProperty({ example: 'alice' })
  username: string;

  @ApiProperty()
  is_staff: boolean;

  static of(user: Pick<User, 'id' | 'username' | 'isStaff'>): MeDto {
    return { id: user.id, username: user.username, is_staff: user.isStaff };
  }
}

export class CreatedUserDto extends MeDto {
  @ApiProperty({ description: 'The API token. Shown only in this response; store it now.' })
  token: string;

  @ApiProperty({ format: 'date-time' })
  created_at: string;

  static withToken(user: User, token: string): CreatedUserDto {
    return { ...MeDto.of(user), token, created_at: user.createdAt.toISOString() };
  }
}
