import { Logger } from '@nestjs/common';

/**
 * Background housekeeping on a timer: one pass every `intervalMs`, never two passes at once, a
 * failed pass logged rather than thrown. The timer does not keep the process alive.
 */
export class PeriodicTask {
  private timer?: NodeJS.Timeout;
  private running = false;

  constructor(
    private readonly logger: Logger,
    private readonly what: string,
    private readonly pass: () => Promise<number>,
  ) {}

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.run(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass now (skipped while one runs); what the pass counted, or 0 if it failed. */
  async run(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      return await this.pass();
    } catch (error) {
      this.logger.warn(`${this.what} failed: ${(error as Error).message}`);
      return 0;
    } finally {
      this.running = false;
    }
  }
}
