//! Encoded queries (`sysparm_query`): parsed into an AST and evaluated in Rust over the
//! loaded rows. No part of a query ever becomes SQL text.
//!
//! Grammar (ServiceNow's): terms joined by `^` (AND); a term starting with `OR` is ORed with
//! the previous condition; `^NQ` starts a new query whose result is ORed with the others;
//! `ORDERBY<field>` / `ORDERBYDESC<field>` sort (may repeat, in any group); `EQ` (the
//! list-view terminator) is ignored. A condition is `<field><operator><value>`.
//!
//! Faithful quirks, documented because they matter for security:
//! - A condition on an unknown field, or with an unknown operator, is **silently dropped** and
//!   the rest applies, as ServiceNow does unless `glide.invalid_query.returns_no_rows` is set.
//!   A typo therefore *widens* the result set; only ACLs, never the query, limit what a user
//!   sees.
//! - Comparisons of text are case-insensitive (ServiceNow's database collation is), so
//!   `category=HR` matches `hr`.
//! - `javascript:gs.getUserID()` (also `gs.getUser().getID()`) is the authenticated user's
//!   sys_id, `javascript:gs.getUserName()` their user_name and
//!   `javascript:gs.getUser().getMyGroups()` (also `getMyGroups()`) the set of their groups'
//!   sys_ids (`=`/`IN` match any of them, `!=`/`NOT IN` none); any other `javascript:` value
//!   matches nothing (fail closed: the sandbox runs no script).
//! - Reference fields compare on the referenced sys_id; dot-walking (`assigned_to.email`)
//!   compares the referenced record's field.

use std::cmp::Ordering;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    StartsWith,
    EndsWith,
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Operators by spelling, longest first so `NOT LIKE` wins over `LIKE` and `<=` over `<`.
const OPERATORS: &[(&str, Op)] = &[
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("NOT LIKE", Op::NotLike),
    ("ISEMPTY", Op::IsEmpty),
    ("NOT IN", Op::NotIn),
    ("LIKE", Op::Like),
    ("IN", Op::In),
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=", Op::Eq),
    ("<", Op::Lt),
    (">", Op::Gt),
];

/// The right-hand side of a condition, with dynamic values already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A literal (or a resolved `javascript:` value).
    Literal(String),
    /// A resolved set (`getMyGroups()`).
    Set(Vec<String>),
    /// A script the sandbox does not run: the condition matches no row.
    Unsupported,
}

/// One `<field><op><value>` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) field: String,
    pub(crate) op: Op,
    pub(crate) value: Value,
}

/// A parsed query: an OR of groups (`^NQ`), each an AND of clauses (`^`), each an OR of
/// conditions (`^OR`), plus the sort order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EncodedQuery {
    pub(crate) groups: Vec<Vec<Vec<Condition>>>,
    /// `(field, descending)`, first key first.
    pub(crate) order: Vec<(String, bool)>,
}

/// The authenticated user, for dynamic values.
pub(crate) struct Me<'a> {
    pub(crate) sys_id: &'a str,
    pub(crate) user_name: &'a str,
    pub(crate) groups: &'a [String],
}

fn resolve_value(raw: &str, me: &Me<'_>) -> Value {
    let Some(script) = raw.trim().strip_prefix("javascript:") else {
        return Value::Literal(raw.to_owned());
    };
    let script = script.trim().trim_end_matches(';').replace(' ', "");
    match script.as_str() {
        "gs.getUserID()" | "gs.getUser().getID()" => Value::Literal(me.sys_id.to_owned()),
        "gs.getUserName()" | "gs.getUser().getName()" => Value::Literal(me.user_name.to_owned()),
        "gs.getUser().getMyGroups()" | "getMyGroups()" => Value::Set(me.groups.to_vec()),
        _ => Value::Unsupported,
    }
}

fn parse_condition(term: &str, known_field: &dyn Fn(&str) -> bool, me: &Me<'_>) -> Option<Condition> {
    // Field names are lower-case identifiers (with dots for dot-walking); operators start
    // with an upper-case letter or a symbol, so the first other character ends the field.
    let end = term
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(term.len());
    let (field, rest) = term.split_at(end);
    if field.is_empty() || !known_field(field) {
        return None;
    }
    let (op, value) =
        OPERATORS.iter().find_map(|(spelling, op)| rest.strip_prefix(spelling).map(|v| (*op, v)))?;
    if matches!(op, Op::IsEmpty | Op::IsNotEmpty) && !value.is_empty() {
        return None;
    }
    Some(Condition { field: field.to_owned(), op, value: resolve_value(value, me) })
}

/// Parses `query`. `known_field` says whether a (possibly dot-walked) field exists; terms
/// naming anything else are dropped.
pub(crate) fn parse(query: &str, known_field: &dyn Fn(&str) -> bool, me: &Me<'_>) -> EncodedQuery {
    let mut parsed = EncodedQuery::default();
    let mut group: Vec<Vec<Condition>> = Vec::new();
    for (i, raw) in query.split('^').enumerate() {
        let mut term = raw;
        if i > 0
            && let Some(rest) = term.strip_prefix("NQ")
        {
            parsed.groups.push(std::mem::take(&mut group));
            term = rest;
        }
        if term.is_empty() || term == "EQ" {
            continue;
        }
        if let Some(field) = term.strip_prefix("ORDERBYDESC") {
            if known_field(field) {
                parsed.order.push((field.to_owned(), true));
            }
        } else if let Some(field) = term.strip_prefix("ORDERBY") {
            if known_field(field) {
                parsed.order.push((field.to_owned(), false));
            }
        } else if let Some(rest) = term.strip_prefix("OR").filter(|_| i > 0) {
            if let Some(cond) = parse_condition(rest, known_field, me) {
                match group.last_mut() {
                    Some(clause) => clause.push(cond),
                    // The condition it would OR with was dropped: it stands alone.
                    None => group.push(vec![cond]),
                }
            }
        } else if let Some(cond) = parse_condition(term, known_field, me) {
            group.push(vec![cond]);
        }
    }
    parsed.groups.push(group);
    parsed
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn compare(a: &str, b: &str) -> Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

impl Condition {
    fn matches(&self, actual: &str) -> bool {
        let expected = match &self.value {
            Value::Literal(expected) => expected,
            Value::Set(items) => {
                let any = items.iter().any(|v| eq_ci(actual, v));
                return match self.op {
                    Op::Eq | Op::In => any,
                    Op::Ne | Op::NotIn => !any,
                    _ => false,
                };
            }
            Value::Unsupported => return false,
        };
        let actual_lc = actual.to_lowercase();
        let expected_lc = expected.to_lowercase();
        let list = || expected.split(',').map(str::trim).collect::<Vec<_>>();
        match self.op {
            Op::Eq => eq_ci(actual, expected),
            Op::Ne => !eq_ci(actual, expected),
            Op::Like => actual_lc.contains(&expected_lc),
            Op::NotLike => !actual_lc.contains(&expected_lc),
            Op::StartsWith => actual_lc.starts_with(&expected_lc),
            Op::EndsWith => actual_lc.ends_with(&expected_lc),
            Op::In => list().iter().any(|v| eq_ci(actual, v)),
            Op::NotIn => !list().iter().any(|v| eq_ci(actual, v)),
            Op::IsEmpty => actual.is_empty(),
            Op::IsNotEmpty => !actual.is_empty(),
            Op::Lt => compare(actual, expected) == Ordering::Less,
            Op::Le => compare(actual, expected) != Ordering::Greater,
            Op::Gt => compare(actual, expected) == Ordering::Greater,
            Op::Ge => compare(actual, expected) != Ordering::Less,
        }
    }
}

impl EncodedQuery {
    /// Whether a row matches; `value_of` gives a (possibly dot-walked) field's raw value.
    pub(crate) fn matches(&self, value_of: &dyn Fn(&str) -> String) -> bool {
        self.groups.iter().any(|group| {
            group.iter().all(|clause| clause.iter().any(|cond| cond.matches(&value_of(&cond.field))))
        })
    }

    /// Orders two rows by the ORDERBY keys (stable sort keeps insertion order for ties).
    pub(crate) fn compare_rows(&self, a: &dyn Fn(&str) -> String, b: &dyn Fn(&str) -> String) -> Ordering {
        for (field, desc) in &self.order {
            let ord = compare(&a(field), &b(field));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn known(f: &str) -> bool {
        matches!(f, "state" | "priority" | "number" | "assigned_to" | "assigned_to.email")
    }

    fn me() -> Me<'static> {
        Me { sys_id: "me-id", user_name: "me@x", groups: &[] }
    }

    #[test]
    fn parses_groups_or_and_order() {
        let q = parse(
            "state=1^ORstate=2^priority<=2^NQnumberSTARTSWITHINC^ORDERBYDESCnumber^ORDERBYpriority",
            &known,
            &me(),
        );
        assert_eq!(q.groups.len(), 2);
        assert_eq!(q.groups[0].len(), 2);
        assert_eq!(q.groups[0][0].len(), 2);
        assert_eq!(q.groups[1][0][0].op, Op::StartsWith);
        assert_eq!(q.order, vec![("number".to_owned(), true), ("priority".to_owned(), false)]);
    }

    #[test]
    fn unknown_fields_and_operators_are_dropped() {
        let q = parse("bogus=1^stateSAMEAS2^priority=3", &known, &me());
        assert_eq!(
            q.groups,
            vec![vec![vec![Condition {
                field: "priority".into(),
                op: Op::Eq,
                value: Value::Literal("3".into()),
            }]]]
        );
        // Nothing left: matches everything (the widening quirk).
        let q = parse("bogus=1", &known, &me());
        assert!(q.matches(&|_| String::new()));
    }

    #[test]
    fn dynamic_values() {
        let q = parse("assigned_to=javascript:gs.getUserID()", &known, &me());
        assert_eq!(q.groups[0][0][0].value, Value::Literal("me-id".into()));
        let q = parse("assigned_to=javascript:gs.getUserName()", &known, &me());
        assert_eq!(q.groups[0][0][0].value, Value::Literal("me@x".into()));
        let q = parse("assigned_to=javascript:new GlideRecord('x')", &known, &me());
        assert_eq!(q.groups[0][0][0].value, Value::Unsupported);
        assert!(!q.matches(&|_| String::new()));
    }

    #[test]
    fn not_operators_win_over_their_prefixes() {
        let q = parse("numberNOT LIKE12^stateNOT IN1,2", &known, &me());
        assert_eq!(q.groups[0][0][0].op, Op::NotLike);
        assert_eq!(q.groups[0][1][0].op, Op::NotIn);
    }

    #[test]
    fn numeric_comparison() {
        let q = parse("priority<10", &known, &me());
        assert!(q.matches(&|_| "9".into()));
        assert!(!q.matches(&|_| "10".into()));
    }
}
