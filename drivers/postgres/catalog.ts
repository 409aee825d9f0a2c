import type pg from 'pg';

/** Catalog snapshots that spec-apply decides on. Every phase reads afresh, so a re-run after a crash sees the truth. */

export interface CatalogRole {
  name: string;
  password: string | null;
}

export interface CatalogDatabase {
  name: string;
  owner: string;
  allowConnections: boolean;
  isTemplate: boolean;
  /** Left behind by an interrupted DROP DATABASE (datconnlimit = -2). */
  invalid: boolean;
}

export async function listRoles(client: pg.Client): Promise<Map<string, CatalogRole>> {
  const { rows } = await client.query<{ name: string; password: string | null }>(
    'SELECT rolname AS name, rolpassword AS password FROM pg_catalog.pg_authid',
  );
  return new Map(rows.map((r) => [r.name, r]));
}

export async function listDatabases(client: pg.Client): Promise<Map<string, CatalogDatabase>> {
  // The owner via a subquery, not datdba::regrole::text, which would quote unusual names.
  const { rows } = await client.query<CatalogDatabase>(
    `SELECT datname AS name,
            (SELECT rolname FROM pg_catalog.pg_roles WHERE oid OPERATOR(pg_catalog.=) datdba) AS owner,
            datallowconn AS "allowConnections",
            datistemplate AS "isTemplate",
            datconnlimit OPERATOR(pg_catalog.=) -2 AS invalid
       FROM pg_catalog.pg_database`,
  );
  return new Map(rows.map((r) => [r.name, r]));
}

/** Privilege letters `role` holds on database `db` (C create, c connect, T temporary). */
export async function databasePrivileges(client: pg.Client, db: string, role: string): Promise<Set<string>> {
  const { rows } = await client.query<{ privilege_type: string }>(
    `SELECT a.privilege_type
       FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
      WHERE d.datname OPERATOR(pg_catalog.=) $1
        AND a.grantee OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $2)`,
    [db, role],
  );
  return new Set(rows.map((r) => r.privilege_type));
}
