//! The directory the stand-in serves: the devstack IdP's users (same object ids, user
//! principal names and display names, see `delegate_devstack_idp::defaults`) with the profile
//! properties Graph keeps for them, and who reports to whom.

use serde_json::{Map, Value};

/// One user object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Object id (`id`), the `oid` claim of the user's tokens.
    pub id: &'static str,
    /// Tenant id the user belongs to.
    pub tenant: &'static str,
    /// `userPrincipalName` (also `mail`).
    pub user_principal_name: &'static str,
    /// `displayName`.
    pub display_name: &'static str,
    /// `givenName`.
    pub given_name: &'static str,
    /// `surname`.
    pub surname: &'static str,
    /// `jobTitle`.
    pub job_title: &'static str,
    /// `department`.
    pub department: &'static str,
    /// `officeLocation`.
    pub office_location: &'static str,
    /// `businessPhones` (at most one, as Entra stores it).
    pub business_phone: Option<&'static str>,
    /// `accountEnabled`.
    pub account_enabled: bool,
    /// Object id of the user's manager, if one is recorded.
    pub manager: Option<&'static str>,
}

/// The article's tenant (same id as the devstack IdP's `TENANT_ID`).
pub const TENANT_ID: &str = "7f3c2a91-4d5e-4b8a-9c1d-2e6f0a8b3c4d";
/// The second tenant (the IdP's `OTHER_TENANT_ID`).
pub const OTHER_TENANT_ID: &str = "2b8e6c4a-9d1f-4e3b-a5c7-8f0d2e4b6a19";

/// Priya Shah, IT Service Desk Manager: Jane's manager (and the manager of the other IT
/// staff); no manager of her own is recorded, so `/me/manager` is a 404 for her.
pub const PRIYA: DirectoryUser = DirectoryUser {
    id: "5e0c7a2d-8b41-4f6e-9d3a-1c2b4e6f8a0d",
    tenant: TENANT_ID,
    user_principal_name: "priya.shah@company.com",
    display_name: "Priya Shah",
    given_name: "Priya",
    surname: "Shah",
    job_title: "IT Service Desk Manager",
    department: "IT",
    office_location: "Building 1, Floor 4",
    business_phone: Some("+1 206 555 0100"),
    account_enabled: true,
    manager: None,
};

/// Jane Smith, the article's user.
pub const JANE: DirectoryUser = DirectoryUser {
    id: "096d3737-42f9-4039-8320-a4737c2b3abe",
    tenant: TENANT_ID,
    user_principal_name: "jane.smith@company.com",
    display_name: "Jane Smith",
    given_name: "Jane",
    surname: "Smith",
    job_title: "Service Desk Analyst",
    department: "IT",
    office_location: "Building 1, Floor 3",
    business_phone: Some("+1 206 555 0142"),
    account_enabled: true,
    manager: Some(PRIYA.id),
};

/// Builds the entries of the IdP's other users (same ids and names).
#[allow(clippy::too_many_arguments)]
const fn user(
    id: &'static str,
    upn: &'static str,
    display_name: &'static str,
    given_name: &'static str,
    surname: &'static str,
    job_title: &'static str,
    department: &'static str,
    manager: Option<&'static str>,
) -> DirectoryUser {
    DirectoryUser {
        id,
        tenant: TENANT_ID,
        user_principal_name: upn,
        display_name,
        given_name,
        surname,
        job_title,
        department,
        office_location: "Building 1",
        business_phone: None,
        account_enabled: true,
        manager,
    }
}

/// Every user of the directory.
pub const USERS: [DirectoryUser; 11] = [
    JANE,
    PRIYA,
    user(
        "bc1e3ac1-c27d-44ec-b72c-2c2678629522",
        "hannah.reed@company.com",
        "Hannah Reed",
        "Hannah",
        "Reed",
        "HR Analyst",
        "Human Resources",
        None,
    ),
    user(
        "32b7228f-cd4a-4557-bd24-b39645cf8aa4",
        "sam.ortiz@company.com",
        "Sam Ortiz",
        "Sam",
        "Ortiz",
        "Security Analyst",
        "IT",
        Some(PRIYA.id),
    ),
    user(
        "181e290a-ae9a-4169-8a0c-510089ce5ef7",
        "ravi.patel@company.com",
        "Ravi Patel",
        "Ravi",
        "Patel",
        "Network Engineer",
        "IT",
        Some(PRIYA.id),
    ),
    user(
        "a9b3d1a2-43f9-400c-ba98-666ace1c9c17",
        "maria.garcia@company.com",
        "Maria Garcia",
        "Maria",
        "Garcia",
        "Desktop Support Technician",
        "IT",
        Some(PRIYA.id),
    ),
    user(
        "fd802060-55e8-43eb-acb9-185ed822e2f9",
        "tom.baker@company.com",
        "Tom Baker",
        "Tom",
        "Baker",
        "Account Executive",
        "Sales",
        None,
    ),
    user(
        "b31a5bf3-71f9-40cf-801f-e4fcce06294d",
        "it.admin@company.com",
        "IT Admin",
        "IT",
        "Admin",
        "ServiceNow Administrator",
        "IT",
        Some(PRIYA.id),
    ),
    user(
        "18f918e2-4a8b-4188-8be1-9514a28a0aaa",
        "audrey.kim@company.com",
        "Audrey Kim",
        "Audrey",
        "Kim",
        "Internal Auditor",
        "Finance",
        None,
    ),
    DirectoryUser {
        account_enabled: false,
        ..user(
            "e9a51fb2-a7c8-4e4b-93f1-8766336c7fcd",
            "former.employee@company.com",
            "Former Employee",
            "Former",
            "Employee",
            "",
            "IT",
            None,
        )
    },
    DirectoryUser {
        tenant: OTHER_TENANT_ID,
        office_location: "Fabrikam HQ",
        ..user(
            "6c2a8e4f-0b1d-4f3a-8c5e-7d9b1f3a5c7e",
            "lee.chen@fabrikam.example",
            "Lee Chen",
            "Lee",
            "Chen",
            "Consultant",
            "Consulting",
            None,
        )
    },
];

/// The user of `tenant` whose object id or user principal name is `key` (both compared
/// case-insensitively, as Graph does).
pub(crate) fn find(tenant: &str, key: &str) -> Option<&'static DirectoryUser> {
    USERS.iter().find(|u| {
        u.tenant.eq_ignore_ascii_case(tenant)
            && (u.id.eq_ignore_ascii_case(key) || u.user_principal_name.eq_ignore_ascii_case(key))
    })
}

/// Properties Graph v1.0 returns for a user when no `$select` is given, in its order.
pub(crate) const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Every property `$select` may name (the default set plus a few that need `$select`).
pub(crate) const SELECTABLE: [&str; 14] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "department",
    "accountEnabled",
    "companyName",
];

/// What `User.ReadBasic.All` lets a caller read of *other* users.
pub(crate) const BASIC_PROPERTIES: [&str; 6] =
    ["displayName", "givenName", "surname", "mail", "userPrincipalName", "id"];

impl DirectoryUser {
    /// The value of one property, as Graph serialises it (`null` for unset strings).
    pub(crate) fn property(&self, name: &str) -> Value {
        let text = |s: &str| if s.is_empty() { Value::Null } else { Value::String(s.to_owned()) };
        match name {
            "businessPhones" => Value::Array(self.business_phone.map(|p| vec![p.into()]).unwrap_or_default()),
            "displayName" => text(self.display_name),
            "givenName" => text(self.given_name),
            "jobTitle" => text(self.job_title),
            "mail" | "userPrincipalName" => text(self.user_principal_name),
            "officeLocation" => text(self.office_location),
            "preferredLanguage" => "en-US".into(),
            "surname" => text(self.surname),
            "id" => self.id.into(),
            "department" => text(self.department),
            "accountEnabled" => self.account_enabled.into(),
            "companyName" => {
                if self.tenant == TENANT_ID {
                    "Company".into()
                } else {
                    "Fabrikam".into()
                }
            }
            // mobilePhone and anything unknown: not recorded.
            _ => Value::Null,
        }
    }

    /// The object with `properties` (canonical names), in that order.
    pub(crate) fn object(&self, properties: &[&str]) -> Map<String, Value> {
        properties.iter().map(|p| ((*p).to_owned(), self.property(p))).collect()
    }
}
