import { ApplicationFailure, workflowInfo, type WorkflowInterceptorsFactory } from '@temporalio/workflow';
import { parseComputeConfig } from '../model/compute-spec';
import { specTrustProblem } from '../model/spec-trust';

/**
 * Loaded into the workflow sandbox only by a control-plane worker with
 * DURABLE_COMPUTE_SPEC_TRUST=restricted: a compute spec with fields that give superuser-level
 * power (model/spec-trust.ts) fails the compute at start and is rejected by the configure
 * update's validation, with the fields named. The module is the policy, so nothing needs to cross
 * into the sandbox.
 *
 * Replay safety: the start check runs only when the start is not a replay and not a
 * continue-as-new, so switching a worker fleet to restricted never turns the recorded history
 * of a compute accepted earlier into a different one. Update validators are not replayed.
 */
function refusal(config: unknown): string | undefined {
  const parsed = parseComputeConfig(config);
  // An invalid spec is the workflow's own validation's to report.
  return parsed.ok ? specTrustProblem(parsed.config.spec, 'restricted') : undefined;
}

export const interceptors: WorkflowInterceptorsFactory = () => ({
  inbound: [
    {
      async execute(input, next) {
        const info = workflowInfo();
        const arg = input.args[0] as { config?: unknown; carried?: unknown } | undefined;
        if (info.workflowType === 'computeWorkflow' && !info.unsafe.isReplaying && info.continuedFromExecutionRunId === undefined && arg && !arg.carried) {
          const problem = arg.config === undefined ? undefined : refusal(arg.config);
          if (problem) throw ApplicationFailure.nonRetryable(problem, 'UntrustedSpec');
        }
        return next(input);
      },
      validateUpdate(input, next) {
        if (workflowInfo().workflowType === 'computeWorkflow' && input.name === 'configure') {
          const problem = refusal(input.args[0]);
          if (problem) throw new Error(problem);
        }
        next(input);
      },
    },
  ],
});
