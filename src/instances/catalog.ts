/** What a VM can be made of. A real driver would read these from its cloud; the names are the API. */
export interface Flavor {
  name: string;
  cores: number;
  ram_mb: number;
  disk_gb: number;
}

export const FLAVORS: readonly Flavor[] = [
  { name: 'small', cores: 1, ram_mb: 2048, disk_gb: 20 },
  { name: 'medium', cores: 2, ram_mb: 4096, disk_gb: 40 },
  { name: 'large', cores: 4, ram_mb: 8192, disk_gb: 80 },
];
export const FLAVOR_NAMES = FLAVORS.map((f) => f.name);

export const IMAGES: readonly { name: string }[] = [
  { name: 'debian-12' },
  { name: 'ubuntu-24.04' },
  { name: 'rocky-9' },
  { name: 'alpine-3.20' },
];
export const IMAGE_NAMES = IMAGES.map((i) => i.name);
export const DEFAULT_IMAGE = 'debian-12';
