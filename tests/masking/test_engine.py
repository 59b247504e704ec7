"""The engine on whole texts and the EventMasker on every kind of event body."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from masking import EventMasker, MaskingEngine, Policy, blind_index
from masking.detectors import ALL_ENTITIES
from masking.engine import mask_bytes
from masking.policy import CustomEntity, parse_policy
from tests.masking.conftest import KEY

NS = "dev.blackbox.v1."


def event(
    body_type: str,
    session: str = "s1",
    seq: int = 0,
    target: str = "orders-db",
    kind: str = "CI_JOB",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "event_id": f"{session}-{seq}",
        "session_id": session,
        "seq": seq,
        "event_time": 1_700_000_000_000_000,
        "gateway": {"id": "gw", "product": "test", "version": "0"},
        "identity": {"principal": "ci", "kind": kind, "issuer": None, "groups": []},
        "target": {"name": target, "kind": "POSTGRES", "host": None, "database": None},
        "attributes": {},
        "body": (NS + body_type, fields),
    }


def entities(findings: list[Any]) -> list[str]:
    return [f["entity_type"] for f in findings]


# --- mask_text ----------------------------------------------------------------------------------


def test_masks_keep_length_in_chars_and_bytes(engine: MaskingEngine) -> None:
    text = "first_name: José Müller 日本太郎\nssn 123-45-6789 ✓ 🙂 email zoë@example.de\n"
    masked, findings = engine.mask_text(text, "body.data")
    assert len(masked) == len(text)
    assert len(masked.encode()) == len(text.encode())
    assert "José" not in masked
    assert "123-45-6789" not in masked
    assert "✓ 🙂" in masked
    for f in findings:
        assert masked[f["start"] : f["end"]] != text[f["start"] : f["end"]]
    name = next(f for f in findings if f["entity_type"] == "PERSON")
    assert text[name["start"] : name["end"]] == "José Müller 日本太郎"


def test_character_offsets_of_many_findings_in_a_long_non_ascii_text(engine: MaskingEngine) -> None:
    # Every line holds a value and characters of 2, 3 and 4 bytes (and a lone surrogate, which
    # surrogatepass carries through); each finding's offsets must name its value in characters.
    lines = [f"ünïcødé ✓ \ud800 🙂 user{n}@example.com 日本\n" for n in range(3000)]
    text = "".join(lines)
    masked, findings = engine.mask_text(text, "body.data")
    emails = [f for f in findings if f["entity_type"] == "EMAIL_ADDRESS"]
    assert len(emails) == len(lines)
    line_start = 0
    for number, (line, finding) in enumerate(zip(lines, emails, strict=True)):
        start = line_start + line.index("user")
        assert (finding["start"], finding["end"]) == (start, start + len(f"user{number}@example.com"))
        line_start += len(line)
    assert len(masked) == len(text)


def test_findings_carry_no_plaintext(engine: MaskingEngine) -> None:
    text = "password=hunter2hunter2 card 4111111111111111 mail a.b@c-d.com"
    _, findings = engine.mask_text(text, "body.statement")
    assert sorted(entities(findings)) == ["CREDIT_CARD", "EMAIL_ADDRESS", "PASSWORD"]
    for f in findings:
        assert set(f) == {"entity_type", "field", "start", "end", "blind_index"}
        assert f["field"] == "body.statement"
        assert len(f["blind_index"]) == 32
        assert b"hunter2" not in f["blind_index"]
        assert "hunter2" not in repr(f)
    card = next(f for f in findings if f["entity_type"] == "CREDIT_CARD")
    assert card["blind_index"] == blind_index(KEY, "CREDIT_CARD", b"4111 1111 1111 1111")
    assert "k" * 8 not in repr(engine)
    assert KEY.decode() not in repr(engine)


def test_key_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        MaskingEngine(Policy(name="p"), b"short")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("first_name: Ada\nlast_name: Lovelace\n", ["PERSON", "PERSON"]),
        ('{"birthDate": "1815-12-10", "mrn": "MRN-0048213"}', ["DATE_OF_BIRTH", "MEDICAL_RECORD_NUMBER"]),
        ("export PGPASSWORD='s3cr3t!'\nDB_PASS=x9y8z7\n", ["PASSWORD", "PASSWORD"]),
        ("client_secret=abcDEF123 next_page=2", ["SECRET"]),
        ("Authorization: Bearer abc.def.ghi-opaque\n", ["SECRET"]),
        (
            "home_address: 12 St James's Square, London SW1Y 4LB\nip_address: 10.0.0.1\n",
            ["ADDRESS", "IP_ADDRESS"],
        ),
        ("ssn=123456789 phone: 4155550132 npi=1234567893", ["US_SSN", "PHONE_NUMBER", "US_NPI"]),
        ("ssn=000123456 npi=1234567890", []),  # context does not excuse an invalid value
        ("font-family: Arial; max_tokens: 200", []),
    ],
)
def test_contextual_key_values(engine: MaskingEngine, text: str, expected: list[str]) -> None:
    _, findings = engine.mask_text(text, "body.data")
    assert entities(findings) == expected


def test_psql_table_by_header(engine: MaskingEngine) -> None:
    text = (
        " id | first_name | email            | dob        | status\n"
        "----+------------+------------------+------------+--------\n"
        "  1 | Ada        | ada@lovelace.org | 1815-12-10 | active\n"
        "  2 | Alan       | alan@turing.net  | 06/23/1912 | active\n"
        "(2 rows)\n"
        "status | Ada\n"
    )
    masked, findings = engine.mask_text(text, "body.data")
    assert entities(findings) == ["PERSON", "EMAIL_ADDRESS", "DATE_OF_BIRTH"] * 2
    assert "active" in masked
    assert masked.endswith("status | Ada\n")


def test_csv_and_mysql_tables(engine: MaskingEngine) -> None:
    csv = 'id,full_name,street_address,order_no\n7,"Hopper, Grace","1 Navy Yard, Arlington, VA",ORD-1\n'
    masked, findings = engine.mask_text(csv, "body.data")
    assert entities(findings) == ["PERSON", "ADDRESS"]
    assert '"*************"' in masked
    assert "ORD-1" in masked
    mysql = (
        "+----+---------------+\n| id | customer_name |\n+----+---------------+\n"
        "|  1 | Grace Hopper  |\n+----+---------------+\n1 row in set (0.00 sec)\n"
    )
    masked, findings = engine.mask_text(mysql, "body.data")
    assert entities(findings) == ["PERSON"]
    assert "| ************  |" in masked


def test_kubernetes_secret_yaml_and_json(engine: MaskingEngine) -> None:
    value = base64.b64encode(b"correct horse").decode()
    yaml_text = (
        f"apiVersion: v1\ndata:\n  password: {value}\n  user: YWRtaW4=\nkind: Secret\nmetadata:\n  name: db\n"
    )
    masked, findings = engine.mask_text(yaml_text, "body.response_body")
    assert entities(findings) == ["K8S_SECRET", "K8S_SECRET"]
    assert "name: db" in masked
    assert value not in masked
    doc = {"apiVersion": "v1", "kind": "Secret", "data": {"password": value}, "metadata": {"name": "db"}}
    json_text = json.dumps(doc, indent=2)
    masked, findings = engine.mask_text(json_text, "body.response_body")
    assert entities(findings) == ["K8S_SECRET"]
    assert json.loads(masked)["metadata"]["name"] == "db"
    string_data = (
        "kind: Secret\nstringData:\n  token: plain-text-token\n"
        "  config.yaml: |\n    user: admin\n    pass: x\n"
    )
    masked, findings = engine.mask_text(string_data, "body.data")
    assert "plain-text-token" not in masked
    assert "admin" not in masked


def test_configmap_data_is_not_a_secret(engine: MaskingEngine) -> None:
    text = "apiVersion: v1\ndata:\n  LOG_LEVEL: debug\n  FEATURE_X: enabled\nkind: ConfigMap\n"
    assert engine.mask_text(text, "body.data")[1] == []


def test_fhir_patient(engine: MaskingEngine) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "3f2b8c1e-9d4a-4b2e-8f1a-2c3d4e5f6a7b",
        "identifier": [
            {"system": "https://hospital.example.org/mrn", "value": "A1234567"},
            {"type": {"coding": [{"code": "MR"}]}, "value": "88-1234"},
        ],
        "name": [{"use": "official", "family": "Lovelace", "given": ["Ada", "Augusta"]}],
        "birthDate": "1815-12-10",
        "address": [{"use": "home", "line": ["12 St James's Square"], "city": "London"}],
    }
    text = json.dumps(patient, indent=2)
    masked, findings = engine.mask_text(text, "body.response_body")
    assert sorted(entities(findings)) == sorted(
        [
            "MEDICAL_RECORD_NUMBER",
            "MEDICAL_RECORD_NUMBER",
            "PERSON",
            "PERSON",
            "PERSON",
            "DATE_OF_BIRTH",
            "ADDRESS",
            "ADDRESS",
        ]
    )
    out = json.loads(masked)
    assert out["id"] == patient["id"]
    assert out["name"][0]["use"] == "official"


def test_policy_disable_allow_custom() -> None:
    policy = Policy(
        name="p",
        entities=ALL_ENTITIES - {"IP_ADDRESS"} | {"EMPLOYEE_ID"},
        allow_values=frozenset({"noreply@corp.example.com"}),
        custom=(CustomEntity("EMPLOYEE_ID", re.compile(rb"\bEMP-[0-9]{6}\b")),),
    )
    engine = MaskingEngine(policy, KEY)
    text = "from 10.0.0.1 by EMP-004213 cc NoReply@corp.example.com and ada@corp.example.com"
    masked, findings = engine.mask_text(text, "x")
    assert entities(findings) == ["EMPLOYEE_ID", "EMAIL_ADDRESS"]
    assert "10.0.0.1" in masked
    assert "NoReply@corp.example.com" in masked
    assert "EMP-004213" not in masked


def test_a_custom_match_ending_inside_a_character_masks_the_whole_character() -> None:
    # The pattern works on UTF-8 bytes: its "." takes the first byte of "é".
    policy = Policy(
        name="p",
        entities=frozenset({"EMPLOYEE_ID"}),
        custom=(CustomEntity("EMPLOYEE_ID", re.compile(rb"EMP\d{3}.")),),
    )
    masked, findings = MaskingEngine(policy, KEY).mask_text("id EMP123é ok", "x")
    # Masked as one character of the same UTF-8 length, as everywhere (`mask_bytes`).
    assert masked == "id " + mask_bytes("EMP123é".encode()).decode() + " ok"
    assert "é" not in masked
    assert [(f["start"], f["end"]) for f in findings] == [(3, 10)]


# --- EventMasker --------------------------------------------------------------------------------


def test_unchanged_event_is_the_same_object(engine: MaskingEngine) -> None:
    masker = EventMasker(engine)
    for ev in (
        event("Query", statement="SELECT count(*) FROM orders", parameters=[], database=None),
        event("TerminalOutput", data=b"total 4\r\n"),
        event("TerminalResize", seq=1, cols=80, rows=24),
        event(
            "SessionStart",
            seq=2,
            purpose="deploy v1.2.3",
            client=None,
            source_address=None,
            terminal=None,
            term=None,
        ),
    ):
        masked, findings = masker.mask(ev)
        assert masked is ev
        assert findings == []


def test_query_result_by_column_and_content(engine: MaskingEngine) -> None:
    ev = event(
        "QueryResult",
        columns=["id", "patient_name", "note", "dob"],
        rows=[["1", "Ada Lovelace", "call 415-555-0132", "1815-12-10"], ["2", None, "ok", ""]],
        row_count=2,
        truncated=False,
        duration_us=5,
        error=None,
    )
    masked, findings = EventMasker(engine).mask(ev)
    rows = masked["body"][1]["rows"]
    assert rows[0] == ["1", "************", "call ************", "**********"]
    assert rows[1] == ["2", None, "ok", ""]
    assert [(f["field"], f["entity_type"]) for f in findings] == [
        ("body.rows[0][1]", "PERSON"),
        ("body.rows[0][2]", "PHONE_NUMBER"),
        ("body.rows[0][3]", "DATE_OF_BIRTH"),
    ]
    assert ev["body"][1]["rows"][0][1] == "Ada Lovelace"  # the input is not mutated


def test_query_statement_and_parameters(engine: MaskingEngine) -> None:
    ev = event(
        "Query",
        statement=(
            "INSERT INTO patients (id, full_name, ssn, note) "
            "VALUES (1, 'Ada Lovelace', '123-45-6789', 'ok'), "
            "(2, 'Alan Turing', $1, 'x'); UPDATE users SET email = $2 WHERE last_name = $3"
        ),
        parameters=["078-05-1120", "alan@turing.net", "Turing"],
        database=None,
    )
    masked, findings = EventMasker(engine).mask(ev)
    statement = masked["body"][1]["statement"]
    assert "Ada Lovelace" not in statement
    assert "123-45-6789" not in statement
    assert "Alan Turing" not in statement
    assert "'ok'" in statement
    assert masked["body"][1]["parameters"] == ["***********", "***************", "******"]
    assert {f["field"] for f in findings} >= {"body.statement", "body.parameters[0]", "body.parameters[2]"}


def test_http_exchange(engine: MaskingEngine) -> None:
    ev = event(
        "HttpExchange",
        method="GET",
        url="https://api.example.com/v1/users?email=ada@lovelace.org&page=2",
        status_code=200,
        request_headers={"Authorization": "Bearer opaque-token-123", "Accept": "application/json"},
        request_body=None,
        response_headers={"Set-Cookie": "sid=abc123; HttpOnly"},
        response_body='{"users": [{"first_name": "Ada", "phone": "+44 20 7946 0958"}]}',
        duration_us=1,
    )
    masked, findings = EventMasker(engine).mask(ev)
    body = masked["body"][1]
    assert body["request_headers"]["Authorization"] == "Bearer " + "*" * len("opaque-token-123")
    assert body["request_headers"]["Accept"] == "application/json"
    assert "abc123" not in body["response_headers"]["Set-Cookie"]
    assert "ada@lovelace.org" not in body["url"]
    assert "page=2" in body["url"]
    assert json.loads(body["response_body"])["users"][0] == {"first_name": "***", "phone": "****************"}
    assert "body.request_headers.Authorization" in {f["field"] for f in findings}


def test_kubernetes_api_call(engine: MaskingEngine) -> None:
    secret = json.dumps({"kind": "Secret", "data": {"token": base64.b64encode(b"s3cr3t-token").decode()}})
    ev = event(
        "KubernetesApiCall",
        verb="get",
        resource="secrets",
        namespace="prod",
        name="db",
        subresource=None,
        status_code=200,
        request_body=None,
        response_body=secret,
    )
    _masked, findings = EventMasker(engine).mask(ev)
    assert entities(findings) == ["K8S_SECRET"]
    assert findings[0]["field"] == "body.response_body"


def test_command_argv(engine: MaskingEngine) -> None:
    ev = event("Command", argv=["mysql", "-uroot", "-pS3cret!", "--host", "10.0.0.5"], cwd=None, exit_code=0)
    masked, _ = EventMasker(engine).mask(ev)
    assert masked["body"][1]["argv"] == ["mysql", "-uroot", "-p*******", "--host", "********"]
    ev = event(
        "Command",
        argv=["deploy", "--password", "hunter2", "--first-name", "Ada", "--token=ghs_x"],
        cwd=None,
        exit_code=0,
    )
    masked, _ = EventMasker(engine).mask(ev)
    assert masked["body"][1]["argv"] == [
        "deploy",
        "--password",
        "*******",
        "--first-name",
        "***",
        "--token=*****",
    ]
    ev = event("Command", argv=["curl", "-u", "admin:pa55w0rd", "https://x"], cwd=None, exit_code=0)
    assert EventMasker(engine).mask(ev)[0]["body"][1]["argv"][2] == "admin:********"


def test_free_text_fields(engine: MaskingEngine) -> None:
    ev = event(
        "ApprovalRequested", request_id="r1", reason="need to fix row for ada@lovelace.org", approvers=[]
    )
    masked, findings = EventMasker(engine).mask(ev)
    assert masked["body"][1]["reason"] == "need to fix row for " + "*" * 16
    assert findings[0]["field"] == "body.reason"


def test_policy_per_connection_and_identity() -> None:
    policies = parse_policy(
        {
            "version": 1,
            "default": {"entities": "all"},
            "policies": [
                {
                    "name": "scanners",
                    "match": {"connections": ["inventory-*"], "identity_kinds": ["SCANNER"]},
                    "disable": ["IP_ADDRESS"],
                }
            ],
        }
    )
    masker = EventMasker(MaskingEngine(policies, KEY))
    text = "host 10.1.2.3"
    scanner = event(
        "Query", target="inventory-db", kind="SCANNER", statement=text, parameters=[], database=None
    )
    assert masker.mask(scanner)[0] is scanner
    human = event("Query", target="inventory-db", kind="HUMAN", statement=text, parameters=[], database=None)
    assert masker.mask(human)[0]["body"][1]["statement"] == "host ********"
