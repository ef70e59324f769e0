/** Who is making a request, as the domain sees them. */
export interface Actor {
  readonly id: string;
  readonly username: string;
  readonly isStaff: boolean;
}
