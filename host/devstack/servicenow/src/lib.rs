//! Devstack ServiceNow sandbox: Table API over SQLite with per-user ACLs and sys_audit
