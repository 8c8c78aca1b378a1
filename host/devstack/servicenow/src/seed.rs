//! The sandbox's seed data: the article's users and incidents with fixed sys_ids, so tests
//! and the demo are reproducible.
//!
//! Users are keyed by email (ServiceNow's OIDC integration maps `preferred_username` to
//! `sys_user.email`), and `user_name` equals the email, as it does on instances whose users
//! are provisioned from Entra ID; that is why `sys_audit.user` shows
//! `jane.smith@company.com`. Each user also has an Entra-like `oid`, so the devstack IdP can
//! mint tokens whose `oid` matches the `sys_user` row.
//!
//! The two restricted incidents are deliberately bait: INC0012350 (HR) is *assigned to Jane*
//! and INC0012399 (Security) sits in *Jane's group* and names her in its description, so a
//! naive `assigned_to=me` / `assignment_group=…` / `LIKEjane` filter would leak them; only the
//! per-row read ACL keeps them out of Jane's results.

use crate::store::{Row, Store};

/// A seeded `sys_user`.
#[derive(Debug, Clone, Copy)]
pub struct SeedUser {
    /// `sys_user.sys_id`.
    pub sys_id: &'static str,
    /// `sys_user.email` (and `user_name`): what `preferred_username` maps to.
    pub email: &'static str,
    /// `sys_user.name`, the reference display value.
    pub name: &'static str,
    /// The Entra object id the devstack IdP should put in this user's tokens.
    pub oid: &'static str,
    /// Comma-separated roles (`itil`, `admin`, `auditor`, or none).
    pub roles: &'static str,
    /// Whether the account is active (inactive users are refused like unknown ones).
    pub active: bool,
}

/// A seeded `sys_user_group`.
#[derive(Debug, Clone, Copy)]
pub struct SeedGroup {
    /// `sys_user_group.sys_id`.
    pub sys_id: &'static str,
    /// `sys_user_group.name`.
    pub name: &'static str,
}

/// A seeded incident the tests and the demo refer to by number.
#[derive(Debug, Clone, Copy)]
pub struct SeedIncident {
    /// `incident.sys_id`.
    pub sys_id: &'static str,
    /// `incident.number`.
    pub number: &'static str,
    /// `incident.short_description`.
    pub short_description: &'static str,
    /// `incident.priority` value (`"2"` renders as the article's "P2").
    pub priority: &'static str,
    /// `incident.state` value.
    pub state: &'static str,
    /// The state's display value, as the article's table shows it.
    pub state_label: &'static str,
}

/// Jane Smith, the article's user: `itil`, member of Service Desk.
pub const JANE: SeedUser = SeedUser {
    sys_id: "14a03569d26b949692e5dfe8cb1855fe",
    email: "jane.smith@company.com",
    name: "Jane Smith",
    oid: "096d3737-42f9-4039-8320-a4737c2b3abe",
    roles: "itil",
    active: true,
};
/// Hannah Reed, HR analyst: member of HR, so she sees HR-category incidents.
pub const HR_ANALYST: SeedUser = SeedUser {
    sys_id: "9623d7cfa9ae7a34254499c7001d9a88",
    email: "hannah.reed@company.com",
    name: "Hannah Reed",
    oid: "bc1e3ac1-c27d-44ec-b72c-2c2678629522",
    roles: "itil",
    active: true,
};
/// Sam Ortiz, security analyst: member of Security Operations.
pub const SECURITY_ANALYST: SeedUser = SeedUser {
    sys_id: "059a91e1c527e27951c342505f877031",
    email: "sam.ortiz@company.com",
    name: "Sam Ortiz",
    oid: "32b7228f-cd4a-4557-bd24-b39645cf8aa4",
    roles: "itil",
    active: true,
};
/// Ravi Patel, network engineer: member of Network Operations.
pub const NETWORK_ENGINEER: SeedUser = SeedUser {
    sys_id: "e91b4ad169fc5360df5ca32ebad5ccc2",
    email: "ravi.patel@company.com",
    name: "Ravi Patel",
    oid: "181e290a-ae9a-4169-8a0c-510089ce5ef7",
    roles: "itil",
    active: true,
};
/// Maria Garcia, desktop technician: member of Desktop Support.
pub const DESKTOP_TECHNICIAN: SeedUser = SeedUser {
    sys_id: "b313fc7e8db9b92c903c2ac9316774fe",
    email: "maria.garcia@company.com",
    name: "Maria Garcia",
    oid: "a9b3d1a2-43f9-400c-ba98-666ace1c9c17",
    roles: "itil",
    active: true,
};
/// Tom Baker, an employee without roles: sees only incidents he opened or is the caller of.
pub const END_USER: SeedUser = SeedUser {
    sys_id: "168e5087af895f5b9c2c0ac2cda95957",
    email: "tom.baker@company.com",
    name: "Tom Baker",
    oid: "fd802060-55e8-43eb-acb9-185ed822e2f9",
    roles: "",
    active: true,
};
/// The instance administrator: sees and writes everything, reads sys_audit.
pub const ADMIN: SeedUser = SeedUser {
    sys_id: "68f22599ccdf540b5cb53ec017d7ab26",
    email: "it.admin@company.com",
    name: "IT Admin",
    oid: "b31a5bf3-71f9-40cf-801f-e4fcce06294d",
    roles: "admin",
    active: true,
};
/// Audrey Kim, auditor: may read sys_audit, nothing restricted.
pub const AUDITOR: SeedUser = SeedUser {
    sys_id: "b3642b1932793637c16cf5c51801fd9a",
    email: "audrey.kim@company.com",
    name: "Audrey Kim",
    oid: "18f918e2-4a8b-4188-8be1-9514a28a0aaa",
    roles: "auditor,itil",
    active: true,
};
/// A deactivated account: a valid token for it is refused with 401.
pub const INACTIVE_USER: SeedUser = SeedUser {
    sys_id: "e71b870396ac828f0bb1e330f38d2e64",
    email: "former.employee@company.com",
    name: "Former Employee",
    oid: "e9a51fb2-a7c8-4e4b-93f1-8766336c7fcd",
    roles: "itil",
    active: false,
};

/// Every seeded user.
pub const USERS: [SeedUser; 9] = [
    JANE,
    HR_ANALYST,
    SECURITY_ANALYST,
    NETWORK_ENGINEER,
    DESKTOP_TECHNICIAN,
    END_USER,
    ADMIN,
    AUDITOR,
    INACTIVE_USER,
];

/// Service Desk: Jane's group.
pub const SERVICE_DESK: SeedGroup =
    SeedGroup { sys_id: "d52d5759eec7ddb57c9881b15c41d5c5", name: "Service Desk" };
/// Network Operations.
pub const NETWORK_OPERATIONS: SeedGroup =
    SeedGroup { sys_id: "e474e007b2aa40b4f8540d95a502a86a", name: "Network Operations" };
/// HR: members read HR-category incidents.
pub const HR: SeedGroup = SeedGroup { sys_id: "3eb17c275c832a51a22ba4d70746a9ba", name: "HR" };
/// Security Operations: members read Security-category incidents.
pub const SECURITY_OPERATIONS: SeedGroup =
    SeedGroup { sys_id: "800a4c9416f5c1ee1e9d19e796d2f9e0", name: "Security Operations" };
/// Desktop Support.
pub const DESKTOP_SUPPORT: SeedGroup =
    SeedGroup { sys_id: "44941663a9a967c19bb38b9c1de83405", name: "Desktop Support" };

/// Every seeded group.
pub const GROUPS: [SeedGroup; 5] =
    [SERVICE_DESK, NETWORK_OPERATIONS, HR, SECURITY_OPERATIONS, DESKTOP_SUPPORT];

/// Restricted incident categories (`category` value) and the group whose members may read
/// them; admins read them too.
pub const RESTRICTED_CATEGORIES: [(&str, SeedGroup); 2] = [("hr", HR), ("security", SECURITY_OPERATIONS)];

/// Group memberships `(user, group)`.
const MEMBERSHIPS: [(SeedUser, SeedGroup); 7] = [
    (JANE, SERVICE_DESK),
    (HR_ANALYST, HR),
    (SECURITY_ANALYST, SECURITY_OPERATIONS),
    (NETWORK_ENGINEER, NETWORK_OPERATIONS),
    (DESKTOP_TECHNICIAN, DESKTOP_SUPPORT),
    (ADMIN, SERVICE_DESK),
    (INACTIVE_USER, SERVICE_DESK),
];

/// INC0012345, Jane's: VPN connection dropping, P2, In Progress.
pub const INC0012345: SeedIncident = SeedIncident {
    sys_id: "98eb7bce235ae280390567c27bd6aa42",
    number: "INC0012345",
    short_description: "VPN connection dropping",
    priority: "2",
    state: "2",
    state_label: "In Progress",
};
/// INC0012389, Jane's: Outlook calendar sync failure, P3, New.
pub const INC0012389: SeedIncident = SeedIncident {
    sys_id: "3051b3900334b01b85ab0090b2beca81",
    number: "INC0012389",
    short_description: "Outlook calendar sync failure",
    priority: "3",
    state: "1",
    state_label: "New",
};
/// INC0012401, Jane's: Laptop BSOD after Windows update, P2, In Progress.
pub const INC0012401: SeedIncident = SeedIncident {
    sys_id: "abddfcd9e7893d2b8ec86d6c5539b994",
    number: "INC0012401",
    short_description: "Laptop BSOD after Windows update",
    priority: "2",
    state: "2",
    state_label: "In Progress",
};
/// INC0012455, Jane's: Shared drive permission error, P3, New.
pub const INC0012455: SeedIncident = SeedIncident {
    sys_id: "4a05ae8763a05b058701f8ad609d99cc",
    number: "INC0012455",
    short_description: "Shared drive permission error",
    priority: "3",
    state: "1",
    state_label: "New",
};
/// INC0012478, Jane's: Zoom plugin not loading in Teams, P4, Assigned (custom state 10).
pub const INC0012478: SeedIncident = SeedIncident {
    sys_id: "980bcb4c6c426e402f7307300dc749b0",
    number: "INC0012478",
    short_description: "Zoom plugin not loading in Teams",
    priority: "4",
    state: "10",
    state_label: "Assigned",
};
/// INC0012350: HR category, employee complaint. Assigned to Jane (misrouted) yet invisible
/// to her; visible to the HR analyst.
pub const HR_INCIDENT: SeedIncident = SeedIncident {
    sys_id: "ce400e5a3eccb44d70f5fafefb2114c0",
    number: "INC0012350",
    short_description: "Employee complaint",
    priority: "2",
    state: "2",
    state_label: "In Progress",
};
/// INC0012399: Security category, SOC alert. In Jane's group and names her, yet invisible to
/// her; visible to the security analyst.
pub const SECURITY_INCIDENT: SeedIncident = SeedIncident {
    sys_id: "72346c38e3b71827ded773c7ab935923",
    number: "INC0012399",
    short_description: "SOC alert: impossible travel sign-in",
    priority: "1",
    state: "2",
    state_label: "In Progress",
};
/// INC0012310: a network incident Jane can read (she is `itil`) but may not write: it is
/// assigned to Ravi in Network Operations. PATCH by Jane → 403.
pub const READ_ONLY_FOR_JANE: SeedIncident = SeedIncident {
    sys_id: "6d29e99b844593c913939704cbcd2231",
    number: "INC0012310",
    short_description: "Core switch port flapping in building B",
    priority: "2",
    state: "2",
    state_label: "In Progress",
};

/// Jane's five incidents, in the article's order.
pub const JANE_INCIDENTS: [SeedIncident; 5] = [INC0012345, INC0012389, INC0012401, INC0012455, INC0012478];

/// Encoded query for "incidents assigned to me", as the article's agent would send it.
pub const ASSIGNED_TO_ME_QUERY: &str = "assigned_to=javascript:gs.getUserID()";

/// The other users' incidents: (number, short description, category, state, priority,
/// caller, assignee, group). `None` assignee = unassigned in the group.
type OtherIncident =
    (u32, &'static str, &'static str, &'static str, &'static str, SeedUser, Option<SeedUser>, SeedGroup);

const OTHER_INCIDENTS: [OtherIncident; 36] = [
    (
        12301,
        "Wi-Fi drops on floor 3",
        "network",
        "1",
        "3",
        END_USER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12302,
        "Printer jam on 2nd floor",
        "hardware",
        "2",
        "4",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (
        12303,
        "Cannot access SharePoint site",
        "software",
        "1",
        "3",
        JANE,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (
        12304,
        "DNS resolution slow for internal hosts",
        "network",
        "2",
        "2",
        HR_ANALYST,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12305,
        "Monitor flickering",
        "hardware",
        "6",
        "4",
        SECURITY_ANALYST,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12306, "Request for second docking station", "hardware", "1", "5", END_USER, None, DESKTOP_SUPPORT),
    (
        12307,
        "SAP login error E-42",
        "software",
        "3",
        "3",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (
        12308,
        "Database backup job failed",
        "database",
        "2",
        "1",
        NETWORK_ENGINEER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (12309, "Keyboard keys sticking", "hardware", "7", "5", JANE, Some(DESKTOP_TECHNICIAN), DESKTOP_SUPPORT),
    (12311, "Password reset not arriving by SMS", "inquiry", "1", "3", END_USER, None, SERVICE_DESK),
    (
        12312,
        "Excel crashes when opening large files",
        "software",
        "2",
        "3",
        HR_ANALYST,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (
        12313,
        "Firewall rule request for vendor portal",
        "network",
        "3",
        "4",
        SECURITY_ANALYST,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (12314, "New hire laptop setup", "hardware", "1", "4", HR_ANALYST, None, DESKTOP_SUPPORT),
    (
        12315,
        "VPN client certificate expired",
        "network",
        "6",
        "2",
        END_USER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12316,
        "Teams meeting audio echo",
        "software",
        "2",
        "4",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12317, "How do I book a meeting room?", "inquiry", "7", "5", END_USER, None, SERVICE_DESK),
    (
        12318,
        "Load balancer health check failing",
        "network",
        "2",
        "1",
        NETWORK_ENGINEER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (12319, "Replace broken mouse", "hardware", "8", "5", JANE, None, DESKTOP_SUPPORT),
    (12320, "CRM report shows wrong totals", "database", "1", "3", HR_ANALYST, None, NETWORK_OPERATIONS),
    (
        12321,
        "Badge reader at main entrance offline",
        "hardware",
        "2",
        "2",
        SECURITY_ANALYST,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12322, "Mailbox full warning", "software", "6", "4", END_USER, None, SERVICE_DESK),
    (
        12323,
        "Slow file server in Berlin office",
        "network",
        "1",
        "3",
        END_USER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (12324, "Adobe licence request", "software", "1", "5", HR_ANALYST, None, DESKTOP_SUPPORT),
    (
        12325,
        "Conference room display not detected",
        "hardware",
        "3",
        "4",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12326, "Expense tool timeout", "software", "2", "3", END_USER, None, SERVICE_DESK),
    (
        12327,
        "Intermittent packet loss to AWS",
        "network",
        "2",
        "2",
        NETWORK_ENGINEER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12328,
        "Reporting database disk 90% full",
        "database",
        "1",
        "2",
        NETWORK_ENGINEER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12329,
        "Headset not recognised",
        "hardware",
        "6",
        "5",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12330, "Browser homepage reset request", "inquiry", "7", "5", END_USER, None, SERVICE_DESK),
    (
        12331,
        "OneDrive sync stuck",
        "software",
        "1",
        "3",
        SECURITY_ANALYST,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (
        12332,
        "Guest Wi-Fi portal down",
        "network",
        "2",
        "3",
        END_USER,
        Some(NETWORK_ENGINEER),
        NETWORK_OPERATIONS,
    ),
    (
        12333,
        "Laptop battery swelling",
        "hardware",
        "2",
        "2",
        END_USER,
        Some(DESKTOP_TECHNICIAN),
        DESKTOP_SUPPORT,
    ),
    (12360, "Benefits enrollment question", "hr", "1", "4", END_USER, Some(HR_ANALYST), HR),
    (12362, "Payroll discrepancy for November", "hr", "2", "3", END_USER, Some(HR_ANALYST), HR),
    (
        12410,
        "Phishing email reported by finance",
        "security",
        "2",
        "2",
        END_USER,
        Some(SECURITY_ANALYST),
        SECURITY_OPERATIONS,
    ),
    (
        12412,
        "Malware detected on build server",
        "security",
        "2",
        "1",
        NETWORK_ENGINEER,
        Some(SECURITY_ANALYST),
        SECURITY_OPERATIONS,
    ),
];

/// How many incidents the seed holds.
pub const INCIDENT_COUNT: usize = 8 + OTHER_INCIDENTS.len();

/// A stable 32-hex-digit sys_id for a generated record (splitmix64, so ids look random but
/// never change between runs).
fn generated_sys_id(kind: u64, n: u64) -> String {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(kind.wrapping_mul(1_000_003) ^ n);
    let b = mix(a ^ 0x5eed);
    format!("{a:016x}{b:016x}")
}

fn system_fields(row: &mut Row, created_on: &str) {
    row.insert("sys_created_on", created_on.to_owned());
    row.insert("sys_created_by", "system".to_owned());
    row.insert("sys_updated_on", created_on.to_owned());
    row.insert("sys_updated_by", "system".to_owned());
    row.insert("sys_mod_count", "0".to_owned());
}

fn split_name(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or((name, ""))
}

/// Fills an empty store with the seed.
pub(crate) fn load(store: &Store) -> rusqlite::Result<()> {
    use crate::schema::{INCIDENT, SYS_USER, SYS_USER_GRMEMBER, SYS_USER_GROUP};

    for user in USERS {
        let (first, last) = split_name(user.name);
        let mut row = Row::new();
        row.insert("sys_id", user.sys_id.to_owned());
        row.insert("user_name", user.email.to_owned());
        row.insert("email", user.email.to_owned());
        row.insert("first_name", first.to_owned());
        row.insert("last_name", last.to_owned());
        row.insert("name", user.name.to_owned());
        row.insert("oid", user.oid.to_owned());
        row.insert("roles", user.roles.to_owned());
        row.insert("active", user.active.to_string());
        row.insert("department", "IT".to_owned());
        system_fields(&mut row, "2026-01-05 09:00:00");
        store.insert(&SYS_USER, &row)?;
    }
    for group in GROUPS {
        let mut row = Row::new();
        row.insert("sys_id", group.sys_id.to_owned());
        row.insert("name", group.name.to_owned());
        row.insert("description", format!("{} assignment group", group.name));
        row.insert("active", "true".to_owned());
        system_fields(&mut row, "2026-01-05 09:00:00");
        store.insert(&SYS_USER_GROUP, &row)?;
    }
    for (i, (user, group)) in MEMBERSHIPS.iter().enumerate() {
        let mut row = Row::new();
        row.insert("sys_id", generated_sys_id(1, i as u64));
        row.insert("user", user.sys_id.to_owned());
        row.insert("group", group.sys_id.to_owned());
        system_fields(&mut row, "2026-01-05 09:00:00");
        store.insert(&SYS_USER_GRMEMBER, &row)?;
    }

    struct Spec<'a> {
        sys_id: String,
        number: String,
        short: &'a str,
        description: String,
        category: &'a str,
        state: &'a str,
        priority: &'a str,
        caller: &'a SeedUser,
        assignee: Option<&'a SeedUser>,
        group: &'a SeedGroup,
        created_on: String,
    }
    let mut specs: Vec<Spec<'_>> = Vec::new();
    let jane_detail = [
        (INC0012345, "software", "VPN disconnects every 10-15 minutes when working from home."),
        (INC0012389, "software", "Outlook calendar no longer syncs with the mobile app since Monday."),
        (
            INC0012401,
            "hardware",
            "Blue screen (DRIVER_IRQL_NOT_LESS_OR_EQUAL) after the latest Windows update.",
        ),
        (INC0012455, "software", "Access denied on \\\\fs01\\projects after the group change."),
        (INC0012478, "software", "The Zoom add-in does not appear in Teams meetings."),
    ];
    for (i, (inc, category, description)) in jane_detail.iter().enumerate() {
        specs.push(Spec {
            sys_id: inc.sys_id.to_owned(),
            number: inc.number.to_owned(),
            short: inc.short_description,
            description: (*description).to_owned(),
            category,
            state: inc.state,
            priority: inc.priority,
            caller: &JANE,
            assignee: Some(&JANE),
            group: &SERVICE_DESK,
            created_on: format!("2026-11-{:02} 08:{:02}:00", 20 + i, 10 + i),
        });
    }
    specs.push(Spec {
        sys_id: HR_INCIDENT.sys_id.to_owned(),
        number: HR_INCIDENT.number.to_owned(),
        short: HR_INCIDENT.short_description,
        description: "Formal complaint about conduct in the Service Desk team; witness: Jane Smith. \
                      Misrouted to the Service Desk queue."
            .to_owned(),
        category: "hr",
        state: HR_INCIDENT.state,
        priority: HR_INCIDENT.priority,
        caller: &END_USER,
        assignee: Some(&JANE),
        group: &SERVICE_DESK,
        created_on: "2026-11-18 10:00:00".to_owned(),
    });
    specs.push(Spec {
        sys_id: SECURITY_INCIDENT.sys_id.to_owned(),
        number: SECURITY_INCIDENT.number.to_owned(),
        short: SECURITY_INCIDENT.short_description,
        description: "SOC alert: impossible-travel sign-in for jane.smith@company.com (Jane Smith) \
                      from two countries within 20 minutes. Do not inform the user."
            .to_owned(),
        category: "security",
        state: SECURITY_INCIDENT.state,
        priority: SECURITY_INCIDENT.priority,
        caller: &SECURITY_ANALYST,
        assignee: None,
        group: &SERVICE_DESK,
        created_on: "2026-11-19 02:30:00".to_owned(),
    });
    specs.push(Spec {
        sys_id: READ_ONLY_FOR_JANE.sys_id.to_owned(),
        number: READ_ONLY_FOR_JANE.number.to_owned(),
        short: READ_ONLY_FOR_JANE.short_description,
        description: "Port Gi1/0/24 on core-sw-b flaps every few minutes.".to_owned(),
        category: "network",
        state: READ_ONLY_FOR_JANE.state,
        priority: READ_ONLY_FOR_JANE.priority,
        caller: &JANE,
        assignee: Some(&NETWORK_ENGINEER),
        group: &NETWORK_OPERATIONS,
        created_on: "2026-11-10 11:00:00".to_owned(),
    });
    for (n, short, category, state, priority, caller, assignee, group) in &OTHER_INCIDENTS {
        specs.push(Spec {
            sys_id: generated_sys_id(2, u64::from(*n)),
            number: format!("INC{n:07}"),
            short,
            description: format!("{short}. Reported via the service portal."),
            category,
            state,
            priority,
            caller,
            assignee: assignee.as_ref(),
            group,
            created_on: format!("2026-11-{:02} {:02}:{:02}:00", 1 + n % 28, 8 + n % 9, n % 60),
        });
    }
    for spec in specs {
        let mut row = Row::new();
        row.insert("sys_id", spec.sys_id);
        row.insert("number", spec.number);
        row.insert("short_description", spec.short.to_owned());
        row.insert("description", spec.description);
        row.insert("category", spec.category.to_owned());
        row.insert("state", spec.state.to_owned());
        row.insert("priority", spec.priority.to_owned());
        let (impact, urgency) = match spec.priority {
            "1" => ("1", "1"),
            "2" => ("1", "2"),
            "3" => ("2", "2"),
            "4" => ("2", "3"),
            _ => ("3", "3"),
        };
        row.insert("impact", impact.to_owned());
        row.insert("urgency", urgency.to_owned());
        row.insert("caller_id", spec.caller.sys_id.to_owned());
        row.insert("opened_by", spec.caller.sys_id.to_owned());
        row.insert("assigned_to", spec.assignee.map(|u| u.sys_id.to_owned()).unwrap_or_default());
        row.insert("assignment_group", spec.group.sys_id.to_owned());
        row.insert("contact_type", "self-service".to_owned());
        row.insert("active", (!matches!(spec.state, "7" | "8")).to_string());
        row.insert("opened_at", spec.created_on.clone());
        system_fields(&mut row, &spec.created_on);
        store.insert(&INCIDENT, &row)?;
    }
    Ok(())
}
