/**
 * The settings of pgbouncer's [pgbouncer] section, as its configuration reference documents them
 * (https://www.pgbouncer.org/config.html; 1.18, as Debian 12 ships it, plus the names later
 * releases added). compute_ctl writes pgbouncer_settings into the ini unchecked; here a name
 * pgbouncer does not document is refused with its name, before anything is written.
 */
export const PGBOUNCER_SETTINGS: ReadonlySet<string> = new Set([
  // Generic
  'logfile', 'pidfile', 'listen_addr', 'listen_port', 'unix_socket_dir', 'unix_socket_mode', 'unix_socket_group',
  'user', 'pool_mode', 'max_client_conn', 'default_pool_size', 'min_pool_size', 'reserve_pool_size',
  'reserve_pool_timeout', 'max_db_connections', 'max_db_client_connections', 'max_user_connections',
  'max_user_client_connections', 'server_round_robin', 'track_extra_parameters', 'ignore_startup_parameters',
  'peer_id', 'disable_pqexec', 'application_name_add_host', 'conffile', 'service_name', 'job_name', 'stats_period',
  'max_prepared_statements', 'scram_iterations',
  // Authentication
  'auth_type', 'auth_hba_file', 'auth_ident_file', 'auth_file', 'auth_user', 'auth_query', 'auth_dbname',
  // Log
  'syslog', 'syslog_ident', 'syslog_facility', 'log_connections', 'log_disconnections', 'log_pooler_errors',
  'log_stats', 'verbose',
  // Console access
  'admin_users', 'stats_users',
  // Connection sanity checks, timeouts
  'server_reset_query', 'server_reset_query_always', 'server_check_delay', 'server_check_query', 'server_fast_close',
  'server_lifetime', 'server_idle_timeout', 'server_connect_timeout', 'server_login_retry', 'client_login_timeout',
  'autodb_idle_timeout', 'dns_max_ttl', 'dns_nxdomain_ttl', 'dns_zone_check_period', 'resolv_conf',
  'query_timeout', 'query_wait_timeout', 'cancel_wait_timeout', 'client_idle_timeout', 'idle_transaction_timeout',
  'transaction_timeout', 'suspend_timeout', 'query_wait_notify',
  // Low-level network
  'pkt_buf', 'max_packet_size', 'listen_backlog', 'sbuf_loopcnt', 'so_reuseport', 'tcp_defer_accept',
  'tcp_socket_buffer', 'tcp_keepalive', 'tcp_keepcnt', 'tcp_keepidle', 'tcp_keepintvl', 'tcp_user_timeout',
  // TLS
  'client_tls_sslmode', 'client_tls_key_file', 'client_tls_cert_file', 'client_tls_ca_file', 'client_tls_protocols',
  'client_tls_ciphers', 'client_tls13_ciphers', 'client_tls_ecdhcurve', 'client_tls_dheparams',
  'server_tls_sslmode', 'server_tls_ca_file', 'server_tls_key_file', 'server_tls_cert_file', 'server_tls_protocols',
  'server_tls_ciphers', 'server_tls13_ciphers',
]);

/**
 * Why a pgbouncer setting cannot go into the ini, or undefined. pgbouncer's ini parser keeps the
 * rest of the line as the value, quotes included (`max_client_conn = "150"` is refused as
 * `"150"`), so values are written bare; what could end the line or hide in it is refused instead.
 */
export function pgbouncerSettingProblem(name: string, value: string): string | undefined {
  if (!PGBOUNCER_SETTINGS.has(name)) return `unknown pgbouncer setting ${JSON.stringify(name)} (not in pgbouncer's documented [pgbouncer] settings)`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) return `pgbouncer setting ${name}: the value holds a line break or control character`;
  if (value !== value.trim()) return `pgbouncer setting ${name}: the value has leading or trailing spaces, which the ini file would drop`;
  return undefined;
}
