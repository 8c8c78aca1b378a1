"""The Rust agent's snow.rs tests, for the Python port (run by build.sh, natively)."""

import json
import unittest

import snow
from snow import HttpError, Planned
from tool_loop import SchemaError, ToolError, validate_input

BASE = "https://dev.example.com"


def err(f, *args) -> str:
    try:
        f(*args)
    except ToolError as e:
        return e.message
    raise AssertionError("no ToolError")


class Snow(unittest.TestCase):
    def test_query_urls_are_encoded_and_use_display_values(self):
        inp = validate_input(
            snow.query_incidents_schema(),
            {"query": "assigned_to=javascript:gs.getUserID()^ORDERBYnumber", "limit": 5, "fields": snow.DEFAULT_FIELDS},
        )
        p = snow.query_incidents(BASE, inp).page(0)
        self.assertEqual(p.method, "GET")
        self.assertEqual(
            p.url,
            "https://dev.example.com/api/now/table/incident?sysparm_query=assigned_to%3Djavascript%3Ags.getUserID%28%29%5EORDERBYnumber"
            "&sysparm_limit=5&sysparm_fields=number%2Cshort_description%2Cpriority%2Cstate%2Cassigned_to"
            "&sysparm_display_value=true&sysparm_exclude_reference_link=true",
        )
        self.assertIsNone(p.body)
        p = snow.query_incidents(BASE, validate_input(snow.query_incidents_schema(), {})).page(0)
        self.assertIn("sysparm_query=&sysparm_limit=10&sysparm_fields=number%2C", p.url)
        p = snow.query_incidents(BASE, validate_input(snow.query_incidents_schema(), {"fields": " "})).page(0)
        self.assertNotIn("sysparm_fields", p.url)

    def test_encoding(self):
        self.assertEqual(snow.encode("a b+c&d=e^f%g"), "a%20b%2Bc%26d%3De%5Ef%25g")
        self.assertEqual(snow.encode("ünï"), "%C3%BCn%C3%AF")
        self.assertEqual(snow.encode("A-z_0.9~"), "A-z_0.9~")

    def test_query_validation(self):
        s = snow.query_incidents_schema()
        with self.assertRaisesRegex(SchemaError, "^`limit` must be at least 1$"):
            validate_input(s, {"limit": 0})
        with self.assertRaisesRegex(SchemaError, "^`limit` must be at most 100$"):
            validate_input(s, {"limit": 101})
        with self.assertRaisesRegex(SchemaError, "unknown property"):
            validate_input(s, {"table": "sys_user"})
        self.assertIn("between 1 and 100", err(snow.query_incidents, BASE, {"limit": 500}))
        self.assertIn("is not allowed", err(snow.query_incidents, BASE, {"query": "caller_id=javascript:new GlideRecord('x')"}))
        self.assertIn("eval(1)", err(snow.query_incidents, BASE, {"query": "a=javascript:gs.getUserID()^b=JavaScript:eval(1)"}))
        snow.query_incidents(BASE, {"query": "assignment_groupINjavascript:gs.getUser().getMyGroups()"})
        self.assertIn("not a field name", err(snow.query_incidents, BASE, {"fields": "number,sys_id&x=1"}))
        snow.query_incidents(BASE, {"fields": "number, assigned_to.email"})
        snow.query_incidents(BASE, {"query": "category=HR^NQpriority=1"})

    def test_paging_follows_next_links_until_limit_rows(self):
        q = snow.query_incidents(BASE, {"query": "active=true", "limit": 5})
        self.assertIn("&sysparm_limit=5&sysparm_offset=5&", q.page(5).url)
        nxt = '<https://x/api/now/table/incident?sysparm_offset=0>;rel="first",<https://x/api/now/table/incident?sysparm_offset=5>;rel="next"'
        last_only = '<https://x/api/now/table/incident?sysparm_offset=0>;rel="first", <https://x/...>; rel="prev"'

        def page(numbers):
            return {"result": [{"number": n} for n in numbers]}

        rows = []
        self.assertEqual(q.absorb(rows, page("abcd"), 0, nxt), 5)
        self.assertIsNone(q.absorb(rows, page("ef"), 5, nxt))
        self.assertEqual([r["number"] for r in rows], list("abcde"))
        rows = []
        self.assertIsNone(q.absorb(rows, page("a"), 0, last_only))
        self.assertIsNone(q.absorb(rows, page(""), 0, None))
        self.assertEqual(q.absorb([], page(""), 10, "<u>; rel=next"), 15)

    def test_get_incident_by_number(self):
        p = snow.get_incident(BASE, {"number": "inc0012345"})
        self.assertEqual(
            p.url,
            "https://dev.example.com/api/now/table/incident?sysparm_query=number%3DINC0012345&sysparm_limit=1"
            "&sysparm_display_value=true&sysparm_exclude_reference_link=true",
        )
        self.assertIn("must not contain `^`", err(snow.get_incident, BASE, {"number": "INC0012345^NQcategory=HR"}))
        for bad in ["INC001234", "INC00123456", "CHG0012345", "INC001234X", "", "INC 012345"]:
            err(snow.get_incident, BASE, {"number": bad})
        with self.assertRaisesRegex(SchemaError, "^`number` is required$"):
            validate_input(snow.get_incident_schema(), {})

    def test_update_incident_patches_allowed_fields(self):
        sys_id = "46D44A5DC0A8010E0100C8F1A9D6A3C0"
        inp = validate_input(
            snow.update_incident_schema(),
            {"sys_id": sys_id, "updates": {"urgency": 1, "work_notes": "called the user", "state": "2"}},
        )
        p = snow.update_incident(BASE, inp)
        self.assertEqual(p.method, "PATCH")
        self.assertEqual(
            p.url,
            "https://dev.example.com/api/now/table/incident/46d44a5dc0a8010e0100c8f1a9d6a3c0"
            "?sysparm_display_value=true&sysparm_exclude_reference_link=true",
        )
        self.assertEqual(json.loads(p.body), {"urgency": "1", "work_notes": "called the user", "state": "2"})
        for bad in ["", "46d44a5dc0a8010e0100c8f1a9d6a3c", "46d44a5dc0a8010e0100c8f1a9d6a3cz", "../../sys_user/x"]:
            self.assertIn("32 hexadecimal", err(snow.update_incident, BASE, {"sys_id": bad, "updates": {"urgency": "1"}}))
        self.assertIn("cannot be updated", err(snow.update_incident, BASE, {"sys_id": sys_id, "updates": {"sys_created_by": "x"}}))
        with self.assertRaisesRegex(SchemaError, "unknown property `updates.number`"):
            validate_input(snow.update_incident_schema(), {"sys_id": sys_id, "updates": {"number": "INC1"}})
        err(snow.update_incident, BASE, {"sys_id": sys_id, "updates": {}})
        err(snow.update_incident, BASE, {"sys_id": sys_id, "updates": {"state": ["2"]}})
        err(snow.update_incident, BASE, {"sys_id": sys_id, "updates": {"comments": "x" * 4001}})
        err(snow.update_incident, BASE, {"sys_id": sys_id})
        p = snow.update_incident(BASE, {"sys_id": sys_id, "updates": {"state": "On Hold"}})
        self.assertEqual(p.body, '{"state":"3"}')

    def test_choice_labels_become_values(self):
        cases = [
            ("state", "In Progress", "2"),
            ("state", " resolved ", "6"),
            ("state", "Cancelled", "8"),
            ("state", "2", "2"),
            ("state", "10", "10"),
            ("state", "Awaiting Vendor", "Awaiting Vendor"),
            ("urgency", "1 - High", "1"),
            ("impact", "low", "3"),
            ("priority", "P2", "2"),
            ("priority", "4 - Low", "4"),
            ("urgency", "9 - High", "9 - High"),
            ("short_description", "High", "High"),
        ]
        for field, text, value in cases:
            self.assertEqual(snow.choice_value(field, text), value, (field, text))

    def test_responses_and_errors(self):
        ok = snow.interpret(200, None, b'{"result":[{"number":"INC0012345"}]}')
        self.assertEqual(ok["result"][0]["number"], "INC0012345")
        self.assertIn("not Table API JSON", err(snow.interpret, 200, None, b"<html>hibernating</html>"))

        def envelope(m, d):
            return json.dumps({"error": {"message": m, "detail": d}, "status": "failure"}).encode()

        e = err(snow.interpret, 401, None, envelope("User Not Authenticated", "Required to provide Auth information"))
        self.assertTrue(e.startswith("your session has expired, sign in again"))
        self.assertEqual(
            err(snow.interpret, 403, None, envelope("Operation Failed", "ACL Exception Update Failed")),
            "access denied: ServiceNow does not allow you to do this (ServiceNow: Operation Failed: ACL Exception Update Failed)",
        )
        self.assertEqual(err(snow.interpret, 404, None, envelope("No Record found", "x")), "not found or not visible to you")
        self.assertTrue(err(snow.interpret, 429, "30", b"").endswith("retry in 30 seconds"))
        self.assertIn("retry in a little while", err(snow.interpret, 429, None, b""))
        self.assertTrue(
            err(snow.interpret, 429, "Wed, 21 Oct 2026 07:28:00 GMT", b"").endswith("retry after Wed, 21 Oct 2026 07:28:00 GMT")
        )
        self.assertEqual(
            err(snow.interpret, 500, None, envelope("Internal server error", "")),
            "ServiceNow returned HTTP 500 (ServiceNow: Internal server error)",
        )
        self.assertEqual(err(snow.interpret, 502, None, b"bad gateway"), "ServiceNow returned HTTP 502")

    def test_transport_errors(self):
        p = snow.get_incident(BASE, {"number": "INC0012345"})
        self.assertEqual(
            snow.transport_error(HttpError("denied"), p).message,
            "the host's egress policy does not allow this request (GET https://dev.example.com/api/now/table/incident); "
            "ask the operator to allow it",
        )
        self.assertIn("could not reach", snow.transport_error(HttpError("transport", "timeout"), p).message)
        patch = Planned("PATCH", BASE + "/api/now/table/incident/x", "{}")
        m = snow.transport_error(HttpError("transport", "reset"), patch).message
        self.assertIn("may have been applied", m)
        self.assertNotIn("could not reach", m)

    def test_base_urls(self):
        self.assertEqual(snow.normalize_base_url(" https://x.service-now.com/ "), "https://x.service-now.com")
        self.assertEqual(snow.normalize_base_url("http://127.0.0.1:8443/sn"), "http://127.0.0.1:8443/sn")
        for bad in ["x.service-now.com", "https://", "https://u:p@x.com", "https://x.com?a=1"]:
            with self.assertRaises(ValueError):
                snow.normalize_base_url(bad)

    def test_writable_fields_match_the_schema(self):
        props = snow.update_incident_schema()["properties"]["updates"]["properties"]
        self.assertEqual(len(props), len(snow.WRITABLE_FIELDS))


if __name__ == "__main__":
    unittest.main()
