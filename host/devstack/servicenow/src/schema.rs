//! The sandbox's dictionary: which tables exist, their fields, field types and choice lists.
//!
//! Everything here is static, so the SQL identifiers built from it are compile-time
//! constants; no name that arrives over HTTP is ever spliced into SQL text.

/// How a field's value is interpreted for display values, comparison and references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// Free text (also sys_ids, emails, journal fields).
    Text,
    /// An integer stored as a string (`sys_mod_count`, `record_checkpoint`).
    Integer,
    /// `"true"` / `"false"`.
    Boolean,
    /// UTC `YYYY-MM-DD HH:MM:SS`.
    DateTime,
    /// The sys_id of a row in the named table.
    Reference(&'static str),
    /// A value from a fixed choice list `(value, label)`.
    Choice(&'static [(&'static str, &'static str)]),
}

/// One column of a table.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: &'static str,
    pub(crate) kind: FieldKind,
    /// Whether the Table API may set it on POST/PUT/PATCH (system fields never are).
    pub(crate) writable: bool,
}

/// One table of the sandbox.
#[derive(Debug)]
pub(crate) struct TableDef {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [FieldDef],
    /// The field shown as a reference's `display_value` (ServiceNow's "display" column).
    pub(crate) display_field: &'static str,
}

impl TableDef {
    /// The field called `name`, if this table has one.
    pub(crate) fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn f(name: &'static str, kind: FieldKind) -> FieldDef {
    FieldDef { name, kind, writable: false }
}

const fn w(name: &'static str, kind: FieldKind) -> FieldDef {
    FieldDef { name, kind, writable: true }
}

use FieldKind::{Boolean, Choice, DateTime, Integer, Reference, Text};

/// Incident state choices. `10 Assigned` is not in the out-of-the-box list: it is an
/// instance-specific choice (many customers add one) so the article's table, which shows
/// INC0012478 as "Assigned", can be rendered from real display values.
pub(crate) const STATE_CHOICES: &[(&str, &str)] = &[
    ("1", "New"),
    ("2", "In Progress"),
    ("3", "On Hold"),
    ("6", "Resolved"),
    ("7", "Closed"),
    ("8", "Canceled"),
    ("10", "Assigned"),
];

/// Priority choices as ServiceNow labels them. The article's "P2" is the value with a
/// `P` prefix (how the agent renders it), not a ServiceNow display value.
pub(crate) const PRIORITY_CHOICES: &[(&str, &str)] = &[
    ("1", "1 - Critical"),
    ("2", "2 - High"),
    ("3", "3 - Moderate"),
    ("4", "4 - Low"),
    ("5", "5 - Planning"),
];

const IMPACT_CHOICES: &[(&str, &str)] = &[("1", "1 - High"), ("2", "2 - Medium"), ("3", "3 - Low")];

const CATEGORY_CHOICES: &[(&str, &str)] = &[
    ("inquiry", "Inquiry / Help"),
    ("software", "Software"),
    ("hardware", "Hardware"),
    ("network", "Network"),
    ("database", "Database"),
    ("hr", "HR"),
    ("security", "Security"),
];

const CONTACT_TYPE_CHOICES: &[(&str, &str)] = &[
    ("email", "Email"),
    ("phone", "Phone"),
    ("self-service", "Self-service"),
    ("walk-in", "Walk-in"),
    ("virtual_agent", "Virtual Agent"),
];

static INCIDENT_FIELDS: &[FieldDef] = &[
    f("sys_id", Text),
    f("number", Text),
    w("short_description", Text),
    w("description", Text),
    w("category", Choice(CATEGORY_CHOICES)),
    w("subcategory", Text),
    w("state", Choice(STATE_CHOICES)),
    w("impact", Choice(IMPACT_CHOICES)),
    w("urgency", Choice(IMPACT_CHOICES)),
    w("priority", Choice(PRIORITY_CHOICES)),
    w("caller_id", Reference("sys_user")),
    f("opened_by", Reference("sys_user")),
    w("assigned_to", Reference("sys_user")),
    w("assignment_group", Reference("sys_user_group")),
    w("contact_type", Choice(CONTACT_TYPE_CHOICES)),
    w("work_notes", Text),
    w("comments", Text),
    w("close_code", Text),
    w("close_notes", Text),
    f("active", Boolean),
    f("opened_at", DateTime),
    f("sys_created_on", DateTime),
    f("sys_created_by", Text),
    f("sys_updated_on", DateTime),
    f("sys_updated_by", Text),
    f("sys_mod_count", Integer),
];

static USER_FIELDS: &[FieldDef] = &[
    f("sys_id", Text),
    w("user_name", Text),
    w("email", Text),
    w("first_name", Text),
    w("last_name", Text),
    w("name", Text),
    w("title", Text),
    w("department", Text),
    w("oid", Text),
    w("roles", Text),
    w("active", Boolean),
    w("manager", Reference("sys_user")),
    f("sys_created_on", DateTime),
    f("sys_created_by", Text),
    f("sys_updated_on", DateTime),
    f("sys_updated_by", Text),
    f("sys_mod_count", Integer),
];

static GROUP_FIELDS: &[FieldDef] = &[
    f("sys_id", Text),
    f("name", Text),
    f("description", Text),
    f("email", Text),
    f("manager", Reference("sys_user")),
    f("active", Boolean),
    f("sys_created_on", DateTime),
    f("sys_created_by", Text),
    f("sys_updated_on", DateTime),
    f("sys_updated_by", Text),
    f("sys_mod_count", Integer),
];

static GRMEMBER_FIELDS: &[FieldDef] = &[
    f("sys_id", Text),
    f("user", Reference("sys_user")),
    f("group", Reference("sys_user_group")),
    f("sys_created_on", DateTime),
    f("sys_created_by", Text),
    f("sys_updated_on", DateTime),
    f("sys_updated_by", Text),
    f("sys_mod_count", Integer),
];

static AUDIT_FIELDS: &[FieldDef] = &[
    f("sys_id", Text),
    f("tablename", Text),
    f("documentkey", Text),
    f("fieldname", Text),
    f("oldvalue", Text),
    f("newvalue", Text),
    // ServiceNow's sys_audit.user is a string holding the acting user's user_name.
    f("user", Text),
    f("reason", Text),
    f("record_checkpoint", Integer),
    f("sys_created_on", DateTime),
    f("sys_created_by", Text),
];

/// `incident`.
pub(crate) static INCIDENT: TableDef =
    TableDef { name: "incident", fields: INCIDENT_FIELDS, display_field: "number" };
/// `sys_user`.
pub(crate) static SYS_USER: TableDef =
    TableDef { name: "sys_user", fields: USER_FIELDS, display_field: "name" };
/// `sys_user_group`.
pub(crate) static SYS_USER_GROUP: TableDef =
    TableDef { name: "sys_user_group", fields: GROUP_FIELDS, display_field: "name" };
/// `sys_user_grmember`: group membership.
pub(crate) static SYS_USER_GRMEMBER: TableDef =
    TableDef { name: "sys_user_grmember", fields: GRMEMBER_FIELDS, display_field: "sys_id" };
/// `sys_audit`: one row per field change.
pub(crate) static SYS_AUDIT: TableDef =
    TableDef { name: "sys_audit", fields: AUDIT_FIELDS, display_field: "sys_id" };

/// Every table, in creation order.
pub(crate) static TABLES: &[&TableDef] =
    &[&SYS_USER, &SYS_USER_GROUP, &SYS_USER_GRMEMBER, &INCIDENT, &SYS_AUDIT];

/// The table called `name`, if the sandbox has it.
pub(crate) fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().copied().find(|t| t.name == name)
}

/// The label of `value` in a choice list, or the value itself for values outside the list
/// (ServiceNow shows an unknown choice value as-is).
pub(crate) fn choice_label<'a>(choices: &'a [(&'a str, &'a str)], value: &'a str) -> &'a str {
    choices.iter().find(|(v, _)| *v == value).map_or(value, |(_, label)| label)
}
