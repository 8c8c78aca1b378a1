"""pysnc (ServiceNow's own Python client) against the delegate ServiceNow sandbox, as Jane.

Run by the ignored Rust test `pysnc_queries_pages_reads_and_updates_as_jane` in
host/devstack/servicenow (it serves the sandbox over HTTPS with a fresh devstack CA and
passes the URL, the CA file and Jane's Token B in the environment):

    python3 -m venv /tmp/pysnc && /tmp/pysnc/bin/pip install pysnc
    PYSNC_PYTHON=/tmp/pysnc/bin/python \
        cargo test -p delegate-devstack-servicenow -- --ignored pysnc

Environment: SN_URL (https://127.0.0.1:PORT), SN_CA (PEM file), SN_TOKEN (bearer token).
Exits non-zero with a message on the first failed check.
"""

import os
import sys

import requests
from pysnc import ServiceNowClient
from pysnc.exceptions import RoleException

JANES_FIVE = {"INC0012345", "INC0012389", "INC0012401", "INC0012455", "INC0012478"}
RESTRICTED = {"INC0012350", "INC0012399"}
HR_INCIDENT_SYS_ID = "ce400e5a3eccb44d70f5fafefb2114c0"
READ_ONLY_FOR_JANE = "INC0012310"


class Bearer(requests.auth.AuthBase):
    """Adds the OBO Token B, as delegate's egress would."""

    def __init__(self, token):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


def check(condition, message):
    if not condition:
        print(f"pysnc interop FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    url, ca, token = os.environ["SN_URL"], os.environ["SN_CA"], os.environ["SN_TOKEN"]
    client = ServiceNowClient(url, auth=Bearer(token), verify=ca)

    # Query + paging: batch_size=2 makes pysnc page (sysparm_limit=2, offsets by rows seen,
    # total from X-Total-Count).
    gr = client.GlideRecord("incident", batch_size=2)
    gr.add_query("assigned_to", "javascript:gs.getUserID()")
    gr.query()
    seen = []
    states = {}
    for record in gr:
        number = record.get_value("number")
        seen.append(number)
        states[number] = record.get_display_value("state")
        check(record.get_display_value("assigned_to") == "Jane Smith",
              f"assigned_to display value of {number}: {record.get_display_value('assigned_to')!r}")
    check(len(seen) == len(set(seen)), f"duplicates while paging: {seen}")
    check(set(seen) == JANES_FIVE, f"Jane's incidents: {sorted(seen)}")
    check(states["INC0012478"] == "Assigned", f"INC0012478 state: {states['INC0012478']!r}")
    check(states["INC0012345"] == "In Progress", f"INC0012345 state: {states['INC0012345']!r}")

    # Prompt-injection style: asking for the HR category explicitly returns nothing.
    hr = client.GlideRecord("incident")
    hr.add_query("category", "hr")
    hr.query()
    leaked = [r.get_value("number") for r in hr]
    check(not leaked, f"restricted rows leaked: {leaked}")

    # Read by sys_id: an invisible record is simply not found.
    probe = client.GlideRecord("incident")
    check(probe.get(HR_INCIDENT_SYS_ID) is False, "the HR incident was readable by sys_id")

    # Read by number, update with PATCH, read back.
    inc = client.GlideRecord("incident")
    check(inc.get("number", "INC0012345"), "INC0012345 not found")
    check(inc.get_value("number") not in RESTRICTED, "wrong record")
    sys_id = inc.get_value("sys_id")
    inc.set_value("state", "3")
    inc.set_value("work_notes", "Updated by pysnc interop")
    check(inc.update() is not None, "update returned nothing")
    again = client.GlideRecord("incident")
    check(again.get(sys_id), "INC0012345 not readable after update")
    check(again.get_value("state") == "3", f"state after update: {again.get_value('state')!r}")
    check(again.get_display_value("state") == "On Hold", f"{again.get_display_value('state')!r}")
    check(again.get_value("sys_updated_by") == "jane.smith@company.com",
          f"sys_updated_by: {again.get_value('sys_updated_by')!r}")

    # An incident Jane may read but not write: pysnc maps the 403 to RoleException and
    # keeps ServiceNow's error envelope.
    other = client.GlideRecord("incident")
    check(other.get("number", READ_ONLY_FOR_JANE), f"{READ_ONLY_FOR_JANE} not readable")
    other.set_value("state", "6")
    try:
        other.update()
        check(False, f"update of {READ_ONLY_FOR_JANE} was allowed")
    except RoleException as e:
        check("security constraints" in str(e), f"unexpected 403 body: {e!r}")

    print(f"pysnc interop OK: {sorted(seen)}")


if __name__ == "__main__":
    main()
