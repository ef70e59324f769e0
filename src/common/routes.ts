/** Whether the route pattern a request matched is `root` or one below it (`root/…`). */
export function isUnder(route: string | undefined, root: string): boolean {
  return route === root || (route?.startsWith(`${root}/`) ?? false);
}
