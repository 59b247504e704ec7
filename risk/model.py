"""The nouns every rule module shares: a rule hit, and the catalogue of stable rule ids."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule that fired on one event.

    ``scale`` (0–1] lets graded signals (how many sigma above normal) use part of the rule's
    policy weight; rule matches use all of it. ``subject`` is what the rule fired on (a host, a
    bucket) for allow-lists that match on it; it never holds query or output content.
    """

    rule_id: str
    message: str
    scale: float = 1.0
    subject: str | None = None


# Stable ids: alerts, dashboards and policies refer to them, so rename never, add freely.
# Weights live in default_policy.yaml; this catalogue is what a policy may name.
RULES: dict[str, str] = {
    "sql.ddl": "Schema change (CREATE, ALTER, COMMENT, DROP of an index or other non-data object)",
    "sql.drop": "Destructive DDL: DROP TABLE / SCHEMA / DATABASE, TRUNCATE",
    "sql.unbounded_write": "DELETE or UPDATE without a WHERE clause (or with an always-true one)",
    "sql.select_star_sensitive": "SELECT * on a table tagged sensitive by the policy",
    "sql.copy_program": "COPY ... TO/FROM PROGRAM: runs a shell command on the database server",
    "sql.privilege_change": "GRANT, REVOKE, or creating / altering / dropping a role or user",
    "sql.credential_catalog": "Read of a credential catalog (pg_authid, pg_shadow, mysql.user, ...)",
    "sql.server_file": "Server-side file access (pg_read_file, lo_import, LOAD_FILE, INTO OUTFILE, ...)",
    "sql.unparsed": "Statement that could not be parsed or analysed",
    "k8s.secret_read": "get / list / watch on Secrets, or a service-account token request",
    "k8s.exec": "exec or attach into a running container",
    "k8s.port_forward": "port-forward to a pod",
    "k8s.rbac_change": "create / update / patch of a (Cluster)Role or (Cluster)RoleBinding",
    "k8s.namespace_delete": "Deletion of a namespace",
    "k8s.privileged_pod": (
        "Pod spec with privileged containers, host namespaces, hostPath or added capabilities"
    ),
    "shell.download_exec": "Downloaded content piped into a shell or interpreter",
    "shell.base64_exec": "Base64- (or hex-) decoded content executed",
    "shell.credential_file_read": (
        "Read of a credential file (~/.aws/credentials, ~/.kube/config, id_rsa, .env, ...)"
    ),
    "shell.history_tampering": "Shell history cleared, disabled or deleted",
    "shell.audit_tampering": "Audit daemon or system logs stopped, cleared or deleted",
    "shell.reverse_shell": "Reverse shell or interactive shell upgrade",
    "shell.exfil_copy": "Files copied to another host or bucket (scp, rsync, curl upload, aws s3 cp, ...)",
    "http.bulk_export": "Bulk export endpoint or very large page size",
    "http.admin_endpoint": "Administrative or debug endpoint",
    "behaviour.rows_spike": "Rows returned far above this identity's own history",
    "behaviour.bytes_spike": "Bytes returned far above this identity's own history",
    "behaviour.first_target": "First access of this target by this identity",
    "behaviour.unusual_hour": "Activity at an hour of day this identity is rarely active",
    "behaviour.burst": "Request rate far above this identity's usual rate",
    "behaviour.bulk_sensitive_data": "Many masked personal or secret values returned at once",
    "scoring.failed": "A rule or behaviour check raised on this event: content no rule foresaw",
}
# The reason of an event whose scoring raised: flagged for review, never passed as harmless (a
# crafted input that crashes a parser must not hide what it does).
FAILED_RULE = "scoring.failed"
