/** The largest JSON body accepted (API.md section 6): 64 KiB. */
export const BODY_LIMIT_BYTES = 65_536;
