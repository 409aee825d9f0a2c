// Every workflow type the control-plane worker runs.
export { computeWorkflow } from './compute/workflow';
export { importWorkflow } from './import/workflow';
export { dumpRestoreImportWorkflow } from './import/dump-restore-workflow';
