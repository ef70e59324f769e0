import { Controller, Get } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from '../common/api-errors.decorator';
import { FLAVORS, IMAGES } from './catalog';
import { FlavorListDto, ImageListDto } from './dto/instance.dto';

@ApiTags('catalog')
@ApiBearerAuth()
@Controller('api')
export class CatalogController {
  @Get('flavors')
  @ApiOperation({ operationId: 'listFlavors', summary: 'Flavors an instance can have' })
  @ApiResponse({ status: 200, type: FlavorListDto })
  @ApiErrors(401)
  flavors(): FlavorListDto {
    return { items: [...FLAVORS] };
  }

  @Get('images')
  @ApiOperation({ operationId: 'listImages', summary: 'Images an instance can boot' })
  @ApiResponse({ status: 200, type: ImageListDto })
  @ApiErrors(401)
  images(): ImageListDto {
    return { items: [...IMAGES] };
  }
}
