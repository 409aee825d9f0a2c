import { SETTING_REJECTED } from '../../model/compute-status';

/** Failure types the compute workflow can match on (ApplicationFailure.type). */
export const PostgresFailure = {
  /** The postmaster exited before it was ready (broken configuration, corrupt PGDATA, port in use). */
  StartFailed: 'PostgresStartFailed',
  /** The postmaster did not report ready within the deadline (it is left running). */
  StartTimeout: 'PostgresStartTimeout',
  /** The postmaster did not exit within the deadline after the stop signal. */
  StopTimeout: 'PostgresStopTimeout',
  /** The step needs a running Postgres and there is none on PGDATA. */
  NotRunning: 'PostgresNotRunning',
  /** A postgres binary is missing or not executable. */
  BinaryMissing: 'PostgresBinaryMissing',
  /** PGDATA is a path we refuse to touch. */
  UnsafePgdata: 'UnsafePgdata',
  /** A statement of the spec failed (bad owner, conflicting names, ...). */
  SpecApplyFailed: 'SpecApplyFailed',
  /** The spec handed to an activity is not a valid spec. */
  InvalidSpec: 'InvalidComputeSpec',
  /** The spec's audit_log_level asks for auditing this compute cannot do (pgaudit missing, a compliance level). */
  AuditUnavailable: 'AuditLogUnavailable',
  /** Running as root, and the unprivileged user PostgreSQL must run as does not exist. */
  ServerUserMissing: 'PostgresServerUserMissing',
  /** PGDATA is gone or belongs to another fresh start (the VM's disk was replaced or wiped). */
  PgdataLost: 'PgdataLost',
  /** Postgres rejected a setting of a reconfigure (the previous configuration stays in force). */
  SettingRejected: SETTING_REJECTED,
  /** Another postmaster (not ours, or for another PGDATA) is in the way. */
  PostmasterConflict: 'PostmasterConflict',
} as const;
