import { CancellationScope, log } from '@temporalio/workflow';

/**
 * The link to the compute's VM. Work on the VM's task queue runs through `run`, so the platform's
 * word that the VM is gone (the vmLost signal) abandons it at once: no one will ever poll that
 * queue again.
 */
export class VmLink {
  /** The platform's reason, once the VM is lost. */
  lostReason: string | undefined;
  private readonly scopes = new Set<CancellationScope>();

  get lost(): boolean {
    return this.lostReason !== undefined;
  }

  lostError(): string {
    return `VM lost: ${this.lostReason}`;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    const scope = new CancellationScope();
    this.scopes.add(scope);
    try {
      return await scope.run(work);
    } finally {
      this.scopes.delete(scope);
    }
  }

  /** Records the loss (the first reason wins) and cancels the work waiting on the VM. */
  markLost(arg: { reason?: unknown } | undefined): void {
    if (this.lostReason !== undefined) return;
    const reason = typeof arg?.reason === 'string' ? arg.reason.trim().slice(0, 1000) : '';
    this.lostReason = reason || 'no reason given';
    log.warn('VM lost', { reason: this.lostReason });
    for (const scope of this.scopes) scope.cancel();
  }
}
