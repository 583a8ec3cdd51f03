// Package productdb adapts Lifeline to product databases: the application
// databases (SQLite or PostgreSQL) that hold many tenants' rows in shared
// tables. It inspects their schema (Inspect, Fingerprint, Diff), checks the
// configuration against it (Resolve), installs Lifeline's objects inside them
// (Protect) and applies lifecycle steps to one tenant at a time, each in one
// transaction (Apply).
//
// Engine differences live behind the small dialect interface (sqlite.go,
// postgres.go); everything else is shared.
//
// # Objects installed by Protect
//
//   - lifeline_tenant_state(tenant, app, state, op_id, changed_at): the
//     lifecycle state of each tenant that is not active (” app = the whole
//     product). The application may read it to block access.
//   - one trash table per protected table (SQLite lifeline_trash_<table>,
//     PostgreSQL lifeline.trash_<table>) with the live columns and declared
//     types plus lifeline_op and lifeline_tenant. Rows move there and back
//     with set-based INSERT…SELECT, so undelete is exact.
//   - lifeline_applied: one marker per committed step (idempotent Apply).
//   - lifeline_meta: what protect recorded (fingerprint, tables, limits,
//     whether the DROP guard is on).
//   - lifeline_unlock and the guards below.
//
// # Guards
//
// A raw DELETE (or TRUNCATE, or DROP) by a script with full credentials is
// refused by the database itself, with a message that starts "lifeline:" and
// says how to do it properly, unless Lifeline unlocked that tenant: a step's
// transaction inserts a lifeline_unlock row for its tenant first and deletes
// it before committing, so the row is never visible to anyone else.
//
//   - Root rows: deleting a row of the tenants table, or changing its key,
//     is always refused (both engines).
//   - Mass deletes: more than RowsPerStatement rows, or rows of more than
//     TenantsPerStatement tenants, in one statement (both engines; cascaded
//     rows count with the statement that caused them), and more than
//     RowsPerTransaction rows in one transaction (PostgreSQL only). SQLite
//     has no statement triggers; see sqliteMassTrigger for how a row trigger
//     finds statement boundaries.
//   - TRUNCATE of a protected table (PostgreSQL; SQLite has no TRUNCATE).
//   - DROP TABLE of a protected table (PostgreSQL, only when protect ran as a
//     superuser, since event triggers need one; DropGuard reports it).
//
// What the guards do not catch:
//
//   - anyone who means it: a user who can DROP TRIGGER, write a
//     lifeline_unlock row in their own transaction, or (PostgreSQL) set
//     session_replication_role = replica, gets past them. They stop mistakes,
//     not attackers; backups are the answer to those.
//   - deletes below the limits: a script deleting a few rows per statement
//     in a loop, or one tenant's rows at a time, is not refused (on
//     PostgreSQL the per-transaction limit still applies within one
//     transaction). Everything deleted is still in the backups.
//   - UPDATEs: overwriting rows, or moving them to another tenant by
//     changing the tenant column, is not a delete.
//   - SQLite: DROP TABLE (no DDL triggers, and its implicit delete fires
//     no triggers), per-transaction limits, rows removed without a DELETE
//     trigger firing (a REPLACE conflict without recursive_triggers), and
//     edits to the file itself. The root-row message cannot name the key:
//     RAISE takes only a string literal in the SQLite versions supported.
//     Application triggers that write other rows while a statement deletes
//     can make the statement counter under-count.
//   - PostgreSQL without a superuser: DROP TABLE and DROP SCHEMA … CASCADE.
//   - tables that are not protected. (Rows whose tenant column is NULL are
//     guarded and counted as one tenant, "".)
package productdb
