"""Validates what Relais's FHIR façade serves with fhir.resources (R4 4.0.1).

Run by .ci/fhir-validate against a server loaded with `relais demo`:
  - every resource and Bundle the demo network yields (metadata, each demo
    patient's $everything, whole and walked two at a time by its `next`
    links (the same resources, once each), every read and search the
    CapabilityStatement lists, the practitioners and organisations they
    name), each Bundle entry parsed on its own and the Bundle as a whole;
  - every resource of those Bundles read back by id (each type the
    CapabilityStatement says it reads), the audit trail's AuditEvents, the
    demo consultation as ServiceRequest and Task before and after the pain
    specialist answers it with a proposed plan (the Task's contained
    CarePlan), `Task?focus=` its ServiceRequest, and its thread as
    `Communication?part-of=`;
  - the OperationOutcome of an error, and a discharge Bundle posted as the
    demo hospital doctor (and its OperationOutcome);
  - every ```json block of README.md whose object has a resourceType;
  - identifier and code systems against their published values:
      INS-NIR  urn:oid:1.2.250.1.213.1.4.8  (ANS; FR Core fr-core-patient-ins)
      RPPS     urn:oid:1.2.250.1.71.4.2.1   (ANS; FR Core practitioner idNatPs)
      FR Core identifier types https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203
      LOINC    http://loinc.org, pain 0-10 = 72514-3 (https://loinc.org/72514-3)
      ATC      http://www.whocc.no/atc, level-5 codes (letter, 2 digits, 2 letters, 2 digits)
      SNOMED CT http://snomed.info/sct for routes.
Exits non-zero on the first run with any failure, listing them all.
"""

import json
import re
import sys
import urllib.error
import urllib.request

from fhir.resources import construct_fhir_element

BASE = sys.argv[1]
README = sys.argv[2]
PASSWORD = "relais-demo-password"
INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FR_CORE_TYPES = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
LOINC = "http://loinc.org"
ATC = "http://www.whocc.no/atc"
SNOMED = "http://snomed.info/sct"
ATC_CODE = re.compile(r"^[A-Z][0-9]{2}[A-Z]{2}[0-9]{2}$")

# fhir.resources checks structure, cardinality and types, not the value
# sets bound "required" in R4; these are the required bindings of the
# elements Relais writes (codes from hl7.org/fhir/R4, each element's page).
REQUIRED = {
    ("Bundle", "type"): {"document", "message", "transaction", "transaction-response", "batch",
                         "batch-response", "history", "searchset", "collection"},
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("CarePlan", "status"): {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    ("CarePlan", "intent"): {"proposal", "plan", "order", "option"},
    ("CareTeam", "status"): {"proposed", "active", "suspended", "inactive", "entered-in-error"},
    ("Goal", "lifecycleStatus"): {"proposed", "planned", "accepted", "active", "on-hold", "completed",
                                  "cancelled", "entered-in-error", "rejected"},
    ("MedicationRequest", "status"): {"active", "on-hold", "cancelled", "completed", "entered-in-error",
                                      "stopped", "draft", "unknown"},
    ("MedicationRequest", "intent"): {"proposal", "plan", "order", "original-order", "reflex-order",
                                      "filler-order", "instance-order", "option"},
    ("Consent", "status"): {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"},
    ("Observation", "status"): {"registered", "preliminary", "final", "amended", "corrected",
                                "cancelled", "entered-in-error", "unknown"},
    ("Communication", "status"): {"preparation", "in-progress", "not-done", "on-hold", "stopped",
                                  "completed", "entered-in-error", "unknown"},
    ("Composition", "status"): {"preliminary", "final", "amended", "entered-in-error"},
    ("ServiceRequest", "status"): {"draft", "active", "on-hold", "revoked", "completed",
                                   "entered-in-error", "unknown"},
    ("ServiceRequest", "intent"): {"proposal", "plan", "directive", "order", "original-order",
                                   "reflex-order", "filler-order", "instance-order", "option"},
    ("ServiceRequest", "priority"): {"routine", "urgent", "asap", "stat"},
    ("Task", "status"): {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
                         "in-progress", "on-hold", "failed", "completed", "entered-in-error"},
    ("Task", "intent"): {"unknown", "proposal", "plan", "order", "original-order", "reflex-order",
                         "filler-order", "instance-order", "option"},
    ("Task", "priority"): {"routine", "urgent", "asap", "stat"},
    ("AuditEvent", "action"): {"C", "R", "U", "D", "E"},
    ("AuditEvent", "outcome"): {"0", "4", "8", "12"},
    ("CapabilityStatement", "status"): {"draft", "active", "retired", "unknown"},
    ("CapabilityStatement", "kind"): {"instance", "capability", "requirements"},
}
ISSUE_SEVERITY = {"fatal", "error", "warning", "information"}
ISSUE_TYPE = {"invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
              "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
              "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
              "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
              "exception", "timeout", "incomplete", "throttled", "informational"}
ACTIVITY_STATUS = {"not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled",
                   "stopped", "unknown", "entered-in-error"}
UNITS_OF_TIME = {"s", "min", "h", "d", "wk", "mo", "a"}

failures = []
validated = {"n": 0}


def call(method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Accept", "application/fhir+json")
    if data is not None:
        req.add_header("Content-Type", "application/fhir+json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, res.headers, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read() or b"null")


def rest(method, path, token, body=None):
    """A call to the REST API (JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, res.headers, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read() or b"null")


def login(who):
    req = urllib.request.Request(
        BASE + "/api/v1/auth/login",
        data=json.dumps({"email": f"{who}@demo.relais.test", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as res:
        return json.load(res)["access_token"]


def check_codes(where, resource):
    kind = resource.get("resourceType")
    for (k, element), allowed in REQUIRED.items():
        if k == kind and element in resource and resource[element] not in allowed:
            failures.append(f"{where}: {kind}.{element} = {resource[element]!r} is not in its required value set")
    if kind == "Consent":
        t = resource.get("provision", {}).get("type")
        if t is not None and t not in {"deny", "permit"}:
            failures.append(f"{where}: Consent.provision.type {t!r}")
    if kind == "OperationOutcome":
        for issue in resource.get("issue", []):
            if issue.get("severity") not in ISSUE_SEVERITY or issue.get("code") not in ISSUE_TYPE:
                failures.append(f"{where}: OperationOutcome issue {issue}")
    if kind == "CarePlan":
        for a in resource.get("activity", []):
            d = a.get("detail")
            if d and d.get("status") not in ACTIVITY_STATUS:
                failures.append(f"{where}: CarePlan activity status {d.get('status')!r}")
    for dosage in resource.get("dosageInstruction", []) if kind == "MedicationRequest" else []:
        unit = dosage.get("timing", {}).get("repeat", {}).get("periodUnit")
        if unit is not None and unit not in UNITS_OF_TIME:
            failures.append(f"{where}: periodUnit {unit!r}")


def check_systems(where, resource):
    kind = resource.get("resourceType")
    check_codes(where, resource)
    for ident in resource.get("identifier", []) if isinstance(resource.get("identifier"), list) else []:
        codes = [c.get("code") for c in ident.get("type", {}).get("coding", [])]
        if kind == "Patient":
            if ident.get("system") != INS or not re.fullmatch(r"[0-9]{5}[0-9AB][0-9]{9}", ident.get("value", "")):
                failures.append(f"{where}: patient identifier {ident}")
            if codes != ["INS-NIR"] or ident["type"]["coding"][0]["system"] != FR_CORE_TYPES:
                failures.append(f"{where}: INS identifier type {ident.get('type')}")
        if kind == "Practitioner":
            if ident.get("system") != RPPS or not re.fullmatch(r"[0-9]{11}", ident.get("value", "")):
                failures.append(f"{where}: practitioner identifier {ident}")
            if codes != ["RPPS"]:
                failures.append(f"{where}: RPPS identifier type {ident.get('type')}")
    if kind == "MedicationRequest":
        codings = resource.get("medicationCodeableConcept", {}).get("coding", [])
        atc = [c for c in codings if c.get("system") == ATC]
        if len(atc) != 1 or not ATC_CODE.match(atc[0].get("code", "")):
            failures.append(f"{where}: no single ATC coding in {codings}")
        for dosage in resource.get("dosageInstruction", []):
            routes = dosage.get("route", {}).get("coding", [])
            if routes and routes[0].get("system") != SNOMED:
                failures.append(f"{where}: route {routes}")
    if kind == "Observation":
        for c in resource.get("code", {}).get("coding", []):
            if c.get("system") == LOINC and c.get("code") != "72514-3":
                failures.append(f"{where}: unexpected LOINC code {c}")
            if c.get("code") == "72514-3" and c.get("system") != LOINC:
                failures.append(f"{where}: 72514-3 outside LOINC {c}")


def validate(where, resource):
    """Parses `resource` with its fhir.resources model; records a failure."""
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if not kind:
        failures.append(f"{where}: no resourceType in {str(resource)[:200]}")
        return
    try:
        construct_fhir_element(kind, resource)
        validated["n"] += 1
    except Exception as err:  # pydantic's ValidationError, or an unknown type
        failures.append(f"{where}: {kind} does not validate: {err}")
        return
    check_systems(where, resource)
    for i, entry in enumerate(resource.get("entry", []) if kind == "Bundle" else []):
        validate(f"{where} entry[{i}]", entry.get("resource"))
    for i, contained in enumerate(resource.get("contained", [])):
        validate(f"{where} contained[{i}]", contained)


def fetch(path, token, expect=200):
    status, headers, body = call("GET", path, token)
    if status != expect:
        failures.append(f"GET {path}: {status} {str(body)[:300]}")
    elif headers.get("Content-Type") != "application/fhir+json":
        failures.append(f"GET {path}: content type {headers.get('Content-Type')}")
    validate(f"GET {path}", body)
    return body


def answer_demo_consultation(pain):
    """The pain centre answers the demo consultation with a proposed plan
    (the patient's current one), so that its Task carries an output and a
    contained CarePlan. Returns the consultation id."""
    status, _, page = rest("GET", "/api/v1/consultations?box=received", pain)
    assert status == 200, page
    for c in page["items"]:
        if c["status"] != "submitted" or not c.get("patient_id"):
            continue
        status, _, plan = rest("GET", f"/api/v1/patients/{c['patient_id']}/care-plan", pain)
        body = {"answer": "Split the buprenorphine in two; see the proposed plan."}
        if status == 200:
            proposed = {k: plan[k] for k in ("status", "omt", "analgesics", "pain_goal",
                                             "non_drug_measures", "review_date") if k in plan}
            body["proposed_plan"] = proposed
        status, _, answered = rest("POST", f"/api/v1/consultations/{c['id']}/answer", pain, body)
        if status != 200:
            failures.append(f"answering the demo consultation: {status} {str(answered)[:300]}")
        return c["id"]
    failures.append("the demo has no submitted consultation about a patient")
    return None


def main():
    gp, hospital, pain = login("gp"), login("hospital"), login("pain")
    capability = fetch("/fhir/r4/metadata", None)
    readable = {
        r["type"]
        for r in capability["rest"][0]["resource"]
        if any(i["code"] == "read" for i in r["interaction"])
    }
    consultation = None
    status, _, page = rest("GET", "/api/v1/consultations?box=sent", gp)
    for c in page.get("items", []) if status == 200 else []:
        if c.get("patient_id"):
            consultation = c["id"]
            # Submitted, then answered with a plan.
            fetch(f"/fhir/r4/ServiceRequest/{consultation}", gp)
            fetch(f"/fhir/r4/Task/{consultation}", gp)
            break
    answered = answer_demo_consultation(pain)
    if answered:
        task = fetch(f"/fhir/r4/Task/{answered}", gp)
        if task.get("status") != "completed" or not task.get("output"):
            failures.append(f"the answered consultation's Task: {str(task)[:300]}")
        status, _, view = rest("GET", f"/api/v1/consultations/{answered}", gp)
        if status == 200 and view.get("thread_id"):
            rest("POST", f"/api/v1/threads/{view['thread_id']}/messages", gp,
                 {"body": "Thank you, I will split it from tomorrow."})
        fetch(f"/fhir/r4/Communication?part-of=ServiceRequest/{answered}&_count=5", pain)
        fetch(f"/fhir/r4/ServiceRequest/{answered}", pain)
        by_focus = fetch(f"/fhir/r4/Task?focus=ServiceRequest/{answered}", gp)
        if [e["resource"] for e in by_focus.get("entry", [])] != [task]:
            failures.append(f"Task?focus=ServiceRequest/{answered} is not its Task")
    searches = [
        (r["type"], p["name"])
        for r in capability["rest"][0]["resource"]
        for p in r.get("searchParam", [])
        if p["name"] == "patient"
    ]
    status, _, patients = call("GET", "/api/v1/patients?limit=200", gp)
    assert status == 200, patients
    seen = set()
    for p in patients["items"]:
        pid = p["id"]
        fetch(f"/fhir/r4/Patient/{pid}", gp)
        if p.get("ins"):
            fetch(f"/fhir/r4/Patient?identifier={INS}%7C{p['ins']}", gp)
        everything = fetch(f"/fhir/r4/Patient/{pid}/$everything", gp)
        # Paged two observation records or messages at a time: every page
        # validated, and together the same resources as the whole, once each.
        url, walked = f"/fhir/r4/Patient/{pid}/$everything?_count=2", []
        for _ in range(1000):
            page = fetch(url, gp)
            walked += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in page.get("entry", [])]
            nxt = [l["url"] for l in page.get("link", []) if l["relation"] == "next"]
            if not nxt:
                break
            url = "/fhir/r4/" + nxt[0].split("/fhir/r4/", 1)[1]
        whole = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in everything.get("entry", [])]
        if len(set(walked)) != len(walked) or set(walked) != set(whole):
            failures.append(f"$everything of {pid} paged by 2 differs from the whole")
        for kind, param in searches:
            fetch(f"/fhir/r4/{kind}?{param}=Patient/{pid}", gp)
        fetch(f"/fhir/r4/MedicationRequest?patient={pid}&status=active", gp)
        status, _, _ = call("GET", f"/fhir/r4/CarePlan/{pid}", gp)
        if status == 200:
            fetch(f"/fhir/r4/CarePlan/{pid}", gp)
        text = json.dumps(everything)
        for kind in ("Practitioner", "PractitionerRole", "Organization"):
            for ref in set(re.findall(kind + r"/([0-9a-f-]{36})", text)):
                if (kind, ref) not in seen:
                    seen.add((kind, ref))
                    fetch(f"/fhir/r4/{kind}/{ref}", gp)
        # Every resource of $everything, and the trail, read back by id.
        trail = fetch(f"/fhir/r4/AuditEvent?patient={pid}", gp)
        for e in everything.get("entry", []) + trail.get("entry", [])[:5]:
            r = e["resource"]
            kind = r["resourceType"]
            if kind in readable and (kind, r["id"]) not in seen:
                seen.add((kind, r["id"]))
                again = fetch(f"/fhir/r4/{kind}/{r['id']}", gp)
                if again != r:
                    failures.append(f"GET /fhir/r4/{kind}/{r['id']} differs from its $everything entry")
        # A discharge Bundle made of the export, posted by the hospital doctor.
        keep = [e for e in everything.get("entry", [])
                if e["resource"]["resourceType"] in ("Patient", "CarePlan", "MedicationRequest")]
        if any(e["resource"]["resourceType"] == "MedicationRequest" for e in keep):
            composition = {"fullUrl": "urn:uuid:5f0e8a52-0000-4000-8000-000000000001", "resource": {
                "resourceType": "Composition", "status": "final",
                "type": {"coding": [{"system": LOINC, "code": "18842-5"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "date": "2026-11-24T10:00:00Z",
                "author": [{"display": "CHU"}], "title": "Discharge summary",
                "section": [{"title": "Course", "text": {"status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">Validated by CI</div>'}}]}}
            bundle = {"resourceType": "Bundle", "type": "document",
                      "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5f0e8a52-0000-4000-8000-0000000000ff"},
                      "timestamp": "2026-11-24T10:00:00Z",
                      "entry": [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in [composition] + keep]}
            validate("discharge Bundle", bundle)
            status, _, outcome = call("POST", "/fhir/r4/Bundle", hospital, bundle)
            validate(f"POST /fhir/r4/Bundle ({status})", outcome)
    # Errors are OperationOutcomes.
    fetch("/fhir/r4/Patient/00000000-0000-7000-8000-000000000000", gp, expect=404)
    fetch("/fhir/r4/Patient/00000000-0000-7000-8000-000000000000", None, expect=401)
    status, _, outcome = call("POST", "/fhir/r4/Bundle", hospital, {"resourceType": "Bundle", "type": "collection"})
    if status != 422:
        failures.append(f"POST an empty Bundle: {status}")
    validate("POST an empty Bundle", outcome)
    # The README's examples.
    with open(README, encoding="utf-8") as f:
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", f.read(), re.S)):
            try:
                doc = json.loads(block)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "resourceType" in doc:
                validate(f"README json block {i}", doc)
    print(f"fhir.resources validated {validated['n']} resources")
    if failures:
        print(f"{len(failures)} failure(s):")
        for f in failures:
            print("  " + f)
        sys.exit(1)


main()
