"""Rules on single events: Kubernetes API calls, shell command lines and HTTP exchanges.

SQL lives in risk.sql. Shell is not a language one can parse reliably from keystrokes, so shell
rules are patterns, but applied to a command line split on its unquoted operators: arguments
of commands that only print or search text (``echo``, ``grep``, ``git commit -m``) are dropped
first, so ``grep -rn "curl | sh" docs/`` does not look like ``curl | sh``. Token-level checks
(credential files, copies to other hosts, kubectl) look at each simple command's words.
"""

from __future__ import annotations

import bisect
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from risk.model import Hit

# Longer command lines are cut: the patterns are linear, but a pasted megabyte is not a command.
MAX_LINE = 16_384
# `sh -c '...'` scripts are looked into this many levels deep.
MAX_NESTING = 3
# Terminal input kept per session while waiting for Enter.
MAX_PENDING = 4_096
# Command lines repeat (agents, CI jobs and people run the same few commands over and over)
# and their hits depend on the line alone, so they are cached; longer lines are not kept.
MAX_CACHED_LINE = 1_024
LINE_CACHE_SIZE = 4_096
# Kubernetes request bodies above this are only pattern-matched, not parsed.
MAX_BODY_PARSE = 1_048_576


# --- Kubernetes ---------------------------------------------------------------------------------

_READ_VERBS = {"get", "list", "watch"}
_WRITE_VERBS = {"create", "update", "patch"}
_RBAC_RESOURCES = {"rolebindings", "clusterrolebindings", "roles", "clusterroles"}
_WORKLOADS = {
    "pods",
    "deployments",
    "daemonsets",
    "statefulsets",
    "replicasets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
    "podtemplates",
}
_DANGEROUS_CAPS = {"SYS_ADMIN", "ALL", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN", "DAC_READ_SEARCH", "BPF"}
_HOST_NAMESPACES = ("hostPID", "hostNetwork", "hostIPC")
_POD_TEXT_PATTERNS = (
    (re.compile(r"\bprivileged\"?\s*:\s*true"), "privileged container"),
    (re.compile(r"\bhostPID\"?\s*:\s*true"), "hostPID"),
    (re.compile(r"\bhostNetwork\"?\s*:\s*true"), "hostNetwork"),
    (re.compile(r"\bhostIPC\"?\s*:\s*true"), "hostIPC"),
    (re.compile(r"\bhostPath\"?\s*:"), "hostPath volume"),
)


def kubernetes_hits(call: Mapping[str, Any]) -> list[Hit]:
    """Rules on one Kubernetes API call (the KubernetesApiCall body)."""
    verb = str(call.get("verb") or "").lower()
    resource = str(call.get("resource") or "").lower()
    subresource = str(call.get("subresource") or "").lower().replace("-", "")
    where = _k8s_where(call)
    status = int(call.get("status_code") or 0)
    refused = f" (refused with {status})" if status >= 400 else ""
    hits: list[Hit] = []
    if resource in ("secrets", "secret") and verb in _READ_VERBS and not subresource:
        hits.append(Hit("k8s.secret_read", f"{verb} on secrets{where}{refused}"))
    elif resource == "serviceaccounts" and subresource == "token" and verb == "create":
        hits.append(Hit("k8s.secret_read", f"requests a service-account token{where}{refused}"))
    if subresource in ("exec", "attach"):
        hits.append(Hit("k8s.exec", f"{subresource} into pod{where}{refused}"))
    elif subresource == "portforward":
        hits.append(Hit("k8s.port_forward", f"port-forward to pod{where}{refused}"))
    if resource in _RBAC_RESOURCES and verb in _WRITE_VERBS:
        hits.append(Hit("k8s.rbac_change", f"{verb} on {resource}{where}{refused}"))
    if resource == "namespaces" and verb in ("delete", "deletecollection"):
        hits.append(Hit("k8s.namespace_delete", f"deletes namespace{where}{refused}"))
    if resource in _WORKLOADS and verb in _WRITE_VERBS and not subresource:
        features = pod_features(call.get("request_body"))
        if features:
            hits.append(Hit("k8s.privileged_pod", f"{verb} on {resource}{where} with {', '.join(features)}"))
    return hits


def _k8s_where(call: Mapping[str, Any]) -> str:
    name, namespace = call.get("name"), call.get("namespace")
    text = f" {name}" if name else ""
    return text + (f" in namespace {namespace}" if namespace else "")


def pod_features(body: str | None) -> list[str]:
    """Host-level privileges a pod spec (JSON, YAML or a JSON patch) asks for, in a stable order."""
    if not body:
        return []
    document: Any = None
    if len(body) <= MAX_BODY_PARSE:
        # Both parsers recurse: a body nested thousands deep is a RecursionError, not a crash.
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            try:
                document = (
                    yaml.load(body, Loader=yaml.CSafeLoader)
                    if yaml.__with_libyaml__
                    else yaml.safe_load(body)
                )
            # The safe loader's constructors raise ValueError too ("2001-02-30" as a date).
            except (yaml.YAMLError, ValueError, RecursionError):
                document = None
    if not isinstance(document, dict | list):
        return [label for pattern, label in _POD_TEXT_PATTERNS if pattern.search(body)]
    found: dict[str, None] = {}
    for key, value in _walk(document):
        if key == "privileged" and value is True:
            found["privileged container"] = None
        elif key in _HOST_NAMESPACES and value is True:
            found[key] = None
        elif key == "hostPath" and isinstance(value, dict):
            found["hostPath volume"] = None
        elif key == "capabilities" and isinstance(value, dict) and isinstance(value.get("add"), list):
            for cap in value["add"]:
                if isinstance(cap, str) and cap.upper().removeprefix("CAP_") in _DANGEROUS_CAPS:
                    found[f"capability {cap.upper()}"] = None
    return list(found)


def _walk(document: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of every mapping entry, iteratively (bodies can nest deeper than the stack)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            path, op = node.get("path"), node.get("op")
            if isinstance(path, str) and isinstance(op, str) and "value" in node:
                # A JSON patch operation names its key in the path.
                yield path.rsplit("/", 1)[-1], node["value"]
            for key, value in node.items():
                yield str(key), value
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, dict | list))


# --- HTTP ---------------------------------------------------------------------------------------

# Not "bulk" or "_bulk": those are usually bulk *write* APIs (Elasticsearch), not exports.
_EXPORT_SEGMENTS = {
    "export",
    "exports",
    "_export",
    "dump",
    "dumps",
    "backup",
    "backups",
    "download-all",
    "_all_docs",
}
_ADMIN_SEGMENTS = {
    "admin",
    "_admin",
    "administrator",
    "wp-admin",
    "phpmyadmin",
    "actuator",
    "debug",
    "_debug",
    "console",
    "server-status",
    "jolokia",
}
# Health and info probes under /actuator are what load balancers call; they expose nothing.
_HARMLESS_ACTUATOR = {"health", "info", "prometheus", "liveness", "readiness"}
_PAGE_PARAMS = {
    "limit",
    "per_page",
    "perpage",
    "page_size",
    "pagesize",
    "size",
    "count",
    "max",
    "max_results",
    "maxresults",
    "top",
    "$top",
    "rows",
    "first",
    "take",
    "batch_size",
}


def http_hits(exchange: Mapping[str, Any], bulk_page_size: int) -> list[Hit]:
    """Rules on one HTTP exchange."""
    method = str(exchange.get("method") or "GET").upper()
    path, query = _path_and_query(str(exchange.get("url") or ""))
    shown = path if len(path) <= 120 else path[:117] + "..."
    status = int(exchange.get("status_code") or 0)
    refused = f" (answered {status})" if status >= 400 else ""
    segments = [segment.lower() for segment in path.split("/") if segment]
    stems = [segment.split(".", 1)[0] for segment in segments]
    hits: list[Hit] = []
    export = next((stem for stem in stems if stem in _EXPORT_SEGMENTS), None)
    page = _largest_page(query)
    if export is not None:
        hits.append(Hit("http.bulk_export", f"{method} {shown} is a bulk {export} endpoint{refused}"))
    elif page is not None and page[1] >= bulk_page_size:
        hits.append(
            Hit("http.bulk_export", f"{method} {shown} asks for {page[0]}={page[1]:,} records{refused}")
        )
    for index, stem in enumerate(stems):
        if stem not in _ADMIN_SEGMENTS:
            continue
        following = stems[index + 1] if index + 1 < len(stems) else ""
        if stem == "actuator" and following in _HARMLESS_ACTUATOR:
            continue
        hits.append(Hit("http.admin_endpoint", f"{method} {shown} is an admin or debug endpoint{refused}"))
        break
    return hits


_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def _path_and_query(url: str) -> tuple[str, str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        # urlsplit refuses a malformed host ("http://[::1/admin"); the path still says what was asked.
        rest = _AUTHORITY.sub("", url).split("#", 1)[0]
        path, _, query = rest.partition("?")
        return path or "/", query
    return parts.path or "/", parts.query


def _largest_page(query: str) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key.lower() in _PAGE_PARAMS and value.isdecimal() and len(value) < 19:
            number = int(value)
            if best is None or number > best[1]:
                best = (key, number)
    return best


# --- terminal input -----------------------------------------------------------------------------

_KEYSTROKES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|[@-_])|[\x00-\x1f\x7f]|[^\x00-\x1f\x7f\x1b]+")


def feed_keystrokes(pending: str, data: bytes) -> tuple[list[str], str]:
    """Complete lines typed so far, and what is still pending, after ``data`` arrives.

    Applies the line editing a shell would (backspace, Ctrl-U, Ctrl-W, Ctrl-C) and drops
    escape sequences (arrow keys, bracketed-paste markers). Lines recalled from history or
    completed with Tab are invisible here: only what was typed is.
    """
    lines: list[str] = []
    for match in _KEYSTROKES.finditer(data.decode("utf-8", "replace")):
        chunk = match.group(0)
        if chunk[0] == "\x1b":
            continue
        if chunk in ("\r", "\n"):
            lines.append(pending)
            pending = ""
        elif chunk in ("\x7f", "\x08"):
            pending = pending[:-1]
        elif chunk in ("\x15", "\x03"):
            pending = ""
        elif chunk == "\x17":
            pending = pending.rstrip()
            pending = pending[: max(pending.rfind(" "), -1) + 1]
        elif chunk == "\t" or chunk >= " ":
            pending = (pending + chunk)[:MAX_PENDING]
    return lines, pending


# --- shell --------------------------------------------------------------------------------------

_INTERPRETER = (
    r"(?:sudo\s+(?:-\S+\s+)*)?(?:/usr)?(?:/local)?(?:/bin/)?"
    r"(?:(?:ba|z|k|da|a)?sh|python[\d.]*|perl|ruby|node|php)\b"
)
_DECODE = (
    r"(?:base64\s+(?:-\w*[dD]\w*|--decode)|base32\s+(?:-\w*d\w*|--decode)|xxd\s+-r"
    r"|openssl\s+(?:enc\s+)?-?base64\s+-d)"
)


@dataclass(frozen=True)
class _Pattern:
    """Parts that must match in this order, with no ``stop`` character between one and the next.

    Written as one regex, "A[^stop]*B" backtracks quadratically on a line full of A's without a
    B (a 16 kB line of "exec exec ..." took seconds); matched part by part it is linear.
    """

    rule_id: str
    message: str
    parts: tuple[re.Pattern[str], ...]
    stop: re.Pattern[str]

    def search(self, text: str) -> bool:
        if len(self.parts) == 1:
            return self.parts[0].search(text) is not None
        # Most lines lack the first part: they need not pay for the stops and the cache below.
        if self.parts[0].search(text) is None:
            return False
        stops = [m.start() for m in self.stop.finditer(text)]
        # Per later part: (position searched from, leftmost match at or after it). The leftmost
        # match from any later position up to that match's start is the same one, so each
        # stretch of text is scanned once.
        cache: list[tuple[int, re.Match[str] | None]] = [(len(text) + 1, None)] * len(self.parts)
        for first in self.parts[0].finditer(text):
            position = first.end()
            for index in range(1, len(self.parts)):
                searched_from, found = cache[index]
                reusable = searched_from <= position and (found is None or position <= found.start())
                if not reusable:
                    found = self.parts[index].search(text, position)
                    cache[index] = (position, found)
                if found is None:
                    return False  # no match anywhere further right either
                next_stop = bisect.bisect_left(stops, position)
                limit = stops[next_stop] if next_stop < len(stops) else len(text)
                if found.start() > limit:
                    break
                position = found.end()
            else:
                return True
        return False


def _p(rule_id: str, message: str, *parts: str, stop: str = "\n", flags: int = 0) -> _Pattern:
    return _Pattern(
        rule_id,
        message,
        tuple(re.compile(part, flags) for part in parts),
        re.compile("[" + re.escape(stop if "\n" in stop else stop + "\n") + "]"),
    )


_SHELL_PATTERNS = (
    _p(
        "shell.download_exec",
        "pipes a download into a shell or interpreter",
        r"\b(?:curl|wget|fetch)\b",
        rf"\|\s*{_INTERPRETER}",
        stop="|",
    ),
    _p(
        "shell.download_exec",
        "runs a downloaded script through command substitution",
        r"\b(?:(?:ba|z|k|da)?sh|eval|source|\.)\s+(?:-\w+\s+)*[\"']?(?:\$\(|<\()\s*(?:curl|wget)\b",
    ),
    _p(
        "shell.download_exec",
        "downloads a file, makes it executable and runs it",
        r"\b(?:curl|wget)\b",
        r"(?:&&|;)\s*chmod\s+\+?[0-7]*x",
        stop=";|",
    ),
    _p(
        "shell.download_exec",
        "downloads and runs a PowerShell script",
        r"\b(?:iex|invoke-expression)\b",
        r"\b(?:iwr|irm|invoke-webrequest|invoke-restmethod|downloadstring)\b",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.base64_exec",
        "pipes base64- or hex-decoded content into a shell or interpreter",
        _DECODE,
        rf"\|\s*{_INTERPRETER}",
        stop=";&",
    ),
    _p(
        "shell.base64_exec",
        "evaluates base64-decoded content",
        r"\b(?:eval|exec|(?:ba|z)?sh\s+-c)\s+[\"']?(?:\$\(|`)",
        _DECODE,
    ),
    _p(
        "shell.base64_exec",
        "executes base64-decoded code in an interpreter",
        r"\b(?:b64decode|base64_decode|decode64|atob|frombase64string)\b",
        r"\b(?:exec|eval|system|popen|spawn|invoke-expression|iex)\b",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.base64_exec",
        "executes base64-decoded code in an interpreter",
        r"\b(?:exec|eval|system|popen|iex)\b",
        r"\b(?:b64decode|base64_decode|decode64|atob|frombase64string)\b",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.base64_exec",
        "runs an encoded PowerShell command",
        r"\b(?:powershell|pwsh)(?:\.exe)?\b",
        r"\s-(?:e|ec|enc|encodedcommand)\s+[A-Za-z0-9+/=]{16,}",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.history_tampering",
        "clears or rewrites the shell history",
        r"\bhistory\s+-(?:\w*c|d\s+-?\d+|w\s+/dev/null)",
    ),
    _p(
        "shell.history_tampering",
        "disables the shell history",
        r"\bunset\s+(?:-v\s+)?HIST(?:FILE|SIZE|FILESIZE)\b|\bHISTFILE=(?:/dev/null|\s|$|[\"']{2})|"
        r"\bHIST(?:FILE)?SIZE=0\b|\bset\s+\+o\s+history\b|\bsetopt\s+no_?hist",
    ),
    _p(
        "shell.history_tampering",
        "deletes or truncates a history file",
        r"\b(?:rm|shred|unlink|truncate)\b",
        r"\.(?:bash|zsh|sh|ash|psql|mysql|sqlite|python|node_repl|rediscli)_?history\b",
        stop=";|&",
    ),
    _p(
        "shell.history_tampering",
        "deletes or truncates a history file",
        r"(?:^|[\s;&|])>\s*\S*\.(?:bash|zsh|sh|psql|mysql)_history\b|\bln\s+-\w*\s+/dev/null\s+\S*_history\b",
    ),
    _p(
        "shell.audit_tampering",
        "stops or clears the audit daemon",
        r"\bauditctl\s+(?:-D\b|-e\s*0\b)|\b(?:systemctl|service)\s+(?:stop|disable|mask|kill)\s+auditd\b|"
        r"\bservice\s+auditd\s+stop\b|\b(?:pkill|killall)\s+(?:-\S+\s+)*auditd\b",
    ),
    _p(
        "shell.audit_tampering",
        "deletes or truncates system logs",
        r"\b(?:rm|shred|unlink|truncate)\b",
        r"/var/log/(?:audit|auth\.log|secure|wtmp|btmp|lastlog|syslog|messages)",
        stop=";|&",
    ),
    _p(
        "shell.audit_tampering",
        "deletes or truncates system logs",
        r"(?:^|[\s;&|])>\s*/var/log/(?:audit/|auth\.log|secure|wtmp|btmp|lastlog|syslog|messages)",
    ),
    _p(
        "shell.audit_tampering", "deletes or truncates system logs", r"\bjournalctl\b", r"--(?:vacuum|rotate)"
    ),
    _p(
        "shell.audit_tampering",
        "stops a logging or security agent",
        r"\b(?:systemctl|service)\s+(?:stop|disable|mask|kill)\s+(?:rsyslog|syslog-ng|systemd-journald|falco|"
        r"osqueryd|wazuh-agent|auditbeat|filebeat|datadog-agent|splunkd|crowdstrike|falcon-sensor)\b",
    ),
    _p(
        "shell.reverse_shell",
        "opens a shell over a network connection (/dev/tcp)",
        r"/dev/(?:tcp|udp)/[^/\s]+/\d+",
    ),
    _p(
        "shell.reverse_shell",
        "hands a shell to netcat",
        r"\b(?:nc|ncat|netcat)\b",
        r"\s-\w*[ec]\s+\S*(?:sh|bash|cmd|powershell)\b",
        stop=";|&",
    ),
    _p(
        "shell.reverse_shell",
        "hands a shell to netcat",
        r"\b(?:nc|ncat|netcat|telnet)\b",
        r"\|\s*(?:/bin/)?(?:ba)?sh\b",
        stop=";&",
    ),
    _p(
        "shell.reverse_shell",
        "hands a shell to netcat",
        r"\bmkfifo\b",
        r"\b(?:nc|ncat|netcat|telnet|openssl\s+s_client)\b",
    ),
    _p(
        "shell.reverse_shell",
        "connects a shell to a socket with socat",
        r"\bsocat\b",
        r"\b(?:exec|system):",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.reverse_shell",
        "connects a shell to a socket with socat",
        r"\bsocat\b",
        r"\bpty\b",
        r"\btcp\d?(?:-connect)?:",
        flags=re.IGNORECASE,
    ),
    _p(
        "shell.reverse_shell",
        "spawns an interactive shell from an interpreter one-liner",
        r"\bpython[\d.]*\s+-c\s+",
        r"\bpty\.spawn\(",
    ),
    _p(
        "shell.reverse_shell",
        "spawns an interactive shell from an interpreter one-liner",
        r"\b(?:python[\d.]*|perl|ruby|php|node)\s+-\w*\s+",
        r"\b(?:socket|fsockopen|TCPSocket|net\.Socket)\b",
        r"\b(?:connect|fsockopen|TCPSocket|exec|spawn|dup2|subprocess)\b",
    ),
)

_TEXT_ONLY = {
    "echo",
    "printf",
    "grep",
    "egrep",
    "fgrep",
    "zgrep",
    "rg",
    "ag",
    "ack",
    "man",
    "which",
    "whatis",
    "apropos",
    "help",
    "type",
    "git",
    "gh",
    "jq",
    "yq",
    "#",
}
_SHELLS = {"sh", "bash", "zsh", "ksh", "dash", "ash"}
_WRAPPERS = {
    "sudo",
    "env",
    "nohup",
    "time",
    "nice",
    "ionice",
    "command",
    "builtin",
    "exec",
    "doas",
    "stdbuf",
    "xargs",
}
_WRAPPER_VALUE_OPTIONS = {"-u", "-g", "-n", "-C", "-h", "-p", "-U"}
_READERS = {
    "cat",
    "tac",
    "less",
    "more",
    "most",
    "head",
    "tail",
    "nl",
    "bat",
    "batcat",
    "base64",
    "base32",
    "xxd",
    "od",
    "hexdump",
    "strings",
    "cp",
    "mv",
    "scp",
    "rsync",
    "tar",
    "zip",
    "gzip",
    "bzip2",
    "xz",
    "7z",
    "gpg",
    "grep",
    "egrep",
    "fgrep",
    "rg",
    "ag",
    "awk",
    "gawk",
    "sed",
    "cut",
    "sort",
    "uniq",
    "vi",
    "vim",
    "nvim",
    "nano",
    "emacs",
    "view",
    "openssl",
    "curl",
    "wget",
    "nc",
    "ncat",
    "python",
    "python3",
    "perl",
    "ruby",
    "node",
    "jq",
    "yq",
    "dd",
    "iconv",
    "paste",
    "column",
    "pr",
    "fold",
    "install",
    "sponge",
    "tee",
}

_CREDENTIAL_FILES = (
    ("AWS credentials", re.compile(r"(?:^|[/<=@'\"])\.aws/credentials\b")),
    ("a kubeconfig", re.compile(r"(?:^|[/<=@'\"])\.kube/config\b")),
    ("the shadow password file", re.compile(r"(?:^|[<=@'\"])/etc/g?shadow-?(?=$|['\")\s])")),
    ("an SSH private key", re.compile(r"(?:^|[/<=@'\"])id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?(?=$|['\")\s])")),
    ("SSH keys", re.compile(r"(?:^|[/<=@'\"])\.ssh/\*")),
    (
        "a .env file",
        re.compile(
            r"(?:^|[/<=@'\"])\.env(?:\.(?!example\b|sample\b|template\b|dist\b|defaults?\b)[\w-]+)?(?=$|['\")\s])"
        ),
    ),
    ("git credentials", re.compile(r"(?:^|[/<=@'\"])\.git-credentials\b")),
    ("a .netrc file", re.compile(r"(?:^|[/<=@'\"])\.netrc\b")),
    ("a .pgpass file", re.compile(r"(?:^|[/<=@'\"])\.pgpass\b")),
    ("a MySQL client config", re.compile(r"(?:^|[/<=@'\"])\.my\.cnf\b")),
    ("Docker registry credentials", re.compile(r"(?:^|[/<=@'\"])\.docker/config\.json\b")),
    ("a service-account token", re.compile(r"/var/run/secrets/kubernetes\.io/serviceaccount/token\b")),
    (
        "cloud CLI credentials",
        re.compile(
            r"(?:^|[/<=@'\"])\.config/gcloud/(?:credentials\.db|application_default_credentials\.json|access_tokens\.db)"
            r"|(?:^|[/<=@'\"])\.azure/(?:accessTokens\.json|msal_token_cache\.json)"
        ),
    ),
    ("package registry credentials", re.compile(r"(?:^|[/<=@'\"])\.(?:npmrc|pypirc)\b")),
    ("a Vault token", re.compile(r"(?:^|[/<=@'\"])\.vault-token\b")),
)

_REMOTE = re.compile(r"^(?:[^@/\s:]+@)?(\[[0-9a-fA-F:.]+\]|[\w.-]+):(?!//)")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}  # noqa: S104 (compared with, never bound)
_SCP_VALUE_OPTIONS = {"-P", "-i", "-o", "-F", "-c", "-l", "-S", "-J", "-D", "-X"}
_RSYNC_VALUE_OPTIONS = {
    "-e",
    "--rsh",
    "-f",
    "--filter",
    "--exclude",
    "--include",
    "--port",
    "--password-file",
}
_CURL_UPLOAD = {"-T", "--upload-file"}
_CURL_FORM = {"-F", "--form"}
_CURL_DATA = {"-d", "--data", "--data-binary", "--data-urlencode", "--json"}
_KUBECTL_VALUE_OPTIONS = {
    "-n",
    "--namespace",
    "--context",
    "--cluster",
    "--user",
    "--kubeconfig",
    "-o",
    "--output",
    "-l",
    "--selector",
    "-c",
    "--container",
    "-f",
    "--filename",
    "-s",
    "--server",
    "--as",
}


def shell_hits(line: str, depth: int = 0) -> list[Hit]:
    """Rules on one command line (typed, or a Command's argv joined as a shell would quote it)."""
    if depth == 0 and len(line) <= MAX_CACHED_LINE:
        return list(_shell_hits_cached(line))
    return _shell_hits(line, depth)


@lru_cache(maxsize=LINE_CACHE_SIZE)
def _shell_hits_cached(line: str) -> tuple[Hit, ...]:
    # A tuple, copied into a new list per call: callers extend what they are given.
    return tuple(_shell_hits(line, 0))


def clear_cache() -> None:
    """Empty the command-line cache (benchmarks measure a cold start with it)."""
    _shell_hits_cached.cache_clear()


def _shell_hits(line: str, depth: int) -> list[Hit]:
    line = line[:MAX_LINE]
    segments = _split(line)
    words = [_words(text) for text, _ in segments]
    pattern_text = _pattern_text(segments, words)
    hits: list[Hit] = []
    fired: set[str] = set()
    for pattern in _SHELL_PATTERNS:
        if pattern.rule_id not in fired and pattern.search(pattern_text):
            hits.append(Hit(pattern.rule_id, pattern.message))
            fired.add(pattern.rule_id)
    for segment_words in words:
        name, args = _command(segment_words)
        if not name:
            continue
        hits.extend(_credential_read(name, args))
        hits.extend(_exfil(name, args))
        hits.extend(_kubectl(name, args))
        if name in _SHELLS and "-c" in args and depth < MAX_NESTING:
            script = args[args.index("-c") + 1] if args.index("-c") + 1 < len(args) else ""
            hits.extend(_shell_hits(script, depth + 1))
    first_per_rule: dict[str, Hit] = {}
    for hit in hits:
        first_per_rule.setdefault(hit.rule_id, hit)
    return list(first_per_rule.values())


def command_line(argv: list[str]) -> str:
    """A Command's argv as the line a shell user would have typed."""
    return shlex.join(argv)


def _split(line: str) -> list[tuple[str, str]]:
    """(simple command, following operator) pairs: split on unquoted ; | & and newlines.

    Comments are dropped.
    """
    if _SPLIT_SPECIAL.search(line) is None:
        return [(line, "")]
    segments: list[tuple[str, str]] = []
    start, index, quote = 0, 0, ""
    length = len(line)
    while index < length:
        char = line[index]
        if quote:
            if char == "\\" and quote == '"':
                index += 1
            elif char == quote:
                quote = ""
        elif char == "\\":
            index += 1
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == start or line[index - 1] in " \t;|&("):
            # A comment runs to the end of the line; what it says is never run.
            newline = line.find("\n", index)
            segments.append((line[start:index], ""))
            if newline < 0:
                return segments
            start, index = newline + 1, newline + 1
            continue
        elif char in ";|&\n":
            end = index
            while index + 1 < length and line[index + 1] in "|&" and char != "\n":
                index += 1
            segments.append((line[start:end], line[end : index + 1]))
            start = index + 1
        index += 1
    segments.append((line[start:], ""))
    return segments


def _pattern_text(segments: list[tuple[str, str]], words: list[list[str]], depth: int = 0) -> str:
    """The line as the patterns see it: text-only commands lose their text, ``sh -c`` scripts
    are seen through the same lens."""
    parts: list[str] = []
    for (text, separator), segment_words in zip(segments, words, strict=True):
        name, args = _command(segment_words)
        if name in _TEXT_ONLY:
            parts.append(_neutralised(segment_words))
        elif name in _SHELLS and "-c" in args and args.index("-c") + 1 < len(args) and depth < MAX_NESTING:
            script = args[args.index("-c") + 1]
            inner = _split(script[:MAX_LINE])
            prefix = segment_words[: len(segment_words) - len(args) + args.index("-c") + 1]
            parts.append(
                " ".join(prefix) + " " + _pattern_text(inner, [_words(t) for t, _ in inner], depth + 1)
            )
        else:
            parts.append(text)
        parts.append(separator)
    return "".join(parts)


def _neutralised(words: list[str]) -> str:
    """A text-only command without its text, keeping redirections (``echo > ~/.bash_history``)."""
    kept = words[:1]
    for index, word in enumerate(words[1:], start=1):
        if word in (">", ">>") and index + 1 < len(words):
            kept += [word, words[index + 1]]
        elif word.startswith(">"):
            kept.append(word)
    return " ".join(kept)


# Characters shlex treats specially (quotes, escape, comment); a text without them splits on
# shlex's whitespace alone, far cheaper than running its tokenizer.
_SHLEX_SPECIAL = re.compile(r"[\\'\"#]")
_SHLEX_WORD = re.compile(r"[^ \t\r\n]+")
# Characters `_split` acts on; a line without them is one simple command.
_SPLIT_SPECIAL = re.compile(r"[\\'\"#;|&\n]")


def _words(text: str) -> list[str]:
    if _SHLEX_SPECIAL.search(text) is None:
        return _SHLEX_WORD.findall(text)
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unterminated quote: a typed line need not be valid shell
        return text.split()


def _command(words: list[str]) -> tuple[str, list[str]]:
    """The command's base name and its arguments, past sudo / env / nohup and VAR=value."""
    index = 0
    while index < len(words):
        word = words[index]
        base = word.rsplit("/", 1)[-1]
        if "=" in word and not word.startswith("-") and base == word and word.split("=", 1)[0].isidentifier():
            index += 1
        elif base in _WRAPPERS:
            index += 1
            while index < len(words) and words[index].startswith("-"):
                index += 2 if words[index] in _WRAPPER_VALUE_OPTIONS else 1
        elif base in ("timeout",):
            index += 2
        else:
            return base, words[index + 1 :]
    return "", []


def _credential_read(name: str, args: list[str]) -> list[Hit]:
    if name in ("kubectl", "oc") and args[:2] == ["config", "view"] and "--raw" in args:
        return [
            Hit(
                "shell.credential_file_read",
                "prints the kubeconfig with its credentials (kubectl config view --raw)",
            )
        ]
    if name == "aws" and args[:2] == ["configure", "export-credentials"]:
        return [Hit("shell.credential_file_read", "exports the AWS CLI credentials")]
    if name not in _READERS:
        return []
    for arg in args:
        for label, pattern in _CREDENTIAL_FILES:
            if pattern.search(arg):
                return [Hit("shell.credential_file_read", f"reads {label} with {name}")]
    return []


def _exfil(name: str, args: list[str]) -> list[Hit]:
    if name in ("scp", "rsync"):
        value_options = _SCP_VALUE_OPTIONS if name == "scp" else _RSYNC_VALUE_OPTIONS
        operands = _operands(args, value_options)
        if len(operands) >= 2:
            host = _remote_host(operands[-1])
            if host and not all(_remote_host(source) for source in operands[:-1]):
                return [Hit("shell.exfil_copy", f"copies files to {host} with {name}", subject=host)]
        return []
    if name == "curl":
        return _curl_upload(args)
    if name == "wget" and any(arg.startswith(("--post-file", "--body-file")) for arg in args):
        host = _url_host(args)
        if host:
            return [Hit("shell.exfil_copy", f"uploads a file to {host} with wget", subject=host)]
        return []
    if name in ("aws", "gsutil", "gcloud"):
        return _bucket_copy(name, args)
    if name in ("nc", "ncat", "netcat") and "<" in args:
        operands = _operands(args[: args.index("<")], {"-p", "-w", "-s"})
        host = operands[0] if operands else "a remote host"
        return [Hit("shell.exfil_copy", f"sends a file to {host} with {name}", subject=host)]
    return []


def _curl_upload(args: list[str]) -> list[Hit]:
    if not any(_curl_sends_file(arg, args[i + 1] if i + 1 < len(args) else "") for i, arg in enumerate(args)):
        return []
    host = _url_host(args)
    if not host:
        return []
    return [Hit("shell.exfil_copy", f"uploads a file to {host} with curl", subject=host)]


def _curl_sends_file(arg: str, value: str) -> bool:
    """Whether curl option ``arg`` (followed by ``value``) sends a local file's content."""
    if arg in _CURL_UPLOAD or arg.startswith("--upload-file="):
        return True
    if arg in _CURL_FORM:
        return "=@" in value or "=<" in value
    if arg.startswith("-F") and len(arg) > 2:
        return "=@" in arg or "=<" in arg
    if arg in _CURL_DATA:
        return value.startswith("@") and value != "@-"  # @- is stdin, judged by what feeds the pipe
    return arg.startswith("-d@") or (arg.startswith("--data") and "=@" in arg)


def _bucket_copy(name: str, args: list[str]) -> list[Hit]:
    if name == "aws" and args[:1] == ["s3api"] and "put-object" in args and "--body" in args:
        bucket = args[args.index("--bucket") + 1] if "--bucket" in args[:-1] else "a bucket"
        return [Hit("shell.exfil_copy", f"uploads a file to s3://{bucket}", subject=f"s3://{bucket}")]
    if name == "aws" and args[:1] == ["s3"] and len(args) > 1 and args[1] in ("cp", "mv", "sync"):
        scheme = "s3://"
        operands = _operands(args[2:], {"--profile", "--region", "--exclude", "--include", "--acl", "--sse"})
    elif name == "gsutil" and args[:1] and args[0] in ("cp", "mv", "rsync"):
        scheme = "gs://"
        operands = _operands(args[1:], set())
    elif name == "gcloud" and args[:2] == ["storage", "cp"]:
        scheme = "gs://"
        operands = _operands(args[2:], set())
    else:
        return []
    if len(operands) >= 2 and operands[-1].startswith(scheme) and not operands[0].startswith(scheme):
        bucket = scheme + operands[-1][len(scheme) :].split("/", 1)[0]
        return [Hit("shell.exfil_copy", f"copies local files to {bucket}", subject=bucket)]
    return []


def _kubectl(name: str, args: list[str]) -> list[Hit]:
    """kubectl typed in a shell: the same Kubernetes rules as calls seen by a Kubernetes gateway."""
    if name not in ("kubectl", "oc"):
        return []
    operands = _operands(args, _KUBECTL_VALUE_OPTIONS)
    if not operands:
        return []
    verb, rest = operands[0], operands[1:]
    kinds = [kind.split("/", 1)[0].split(".", 1)[0] for part in rest[:1] for kind in part.split(",")]
    if verb in ("get", "describe", "edit") and any(k in ("secret", "secrets") for k in kinds):
        return [Hit("k8s.secret_read", f"kubectl {verb} on secrets")]
    if verb in ("exec", "attach", "debug"):
        return [Hit("k8s.exec", f"kubectl {verb} into a container")]
    if verb == "port-forward":
        return [Hit("k8s.port_forward", "kubectl port-forward to a pod")]
    if verb == "delete" and any(k in ("ns", "namespace", "namespaces") for k in kinds):
        return [Hit("k8s.namespace_delete", "kubectl deletes a namespace")]
    if verb == "create" and any(
        k in ("rolebinding", "clusterrolebinding", "role", "clusterrole") for k in kinds
    ):
        return [Hit("k8s.rbac_change", f"kubectl creates a {kinds[0]}")]
    if verb == "create" and rest[:1] == ["token"]:
        return [Hit("k8s.secret_read", "kubectl requests a service-account token")]
    return []


def _operands(args: list[str], value_options: set[str]) -> list[str]:
    operands: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in value_options:
            skip = True
        elif not arg.startswith("-") or arg == "-":
            operands.append(arg)
    return operands


def _remote_host(operand: str) -> str | None:
    if operand.startswith("rsync://"):
        host = urlsplit(operand).hostname
    else:
        match = _REMOTE.match(operand)
        host = match.group(1) if match else None
    if not host or host.lower() in _LOCAL_HOSTS or len(host) == 1:  # C:\ is a drive, not a host
        return None
    return host


def _url_host(args: list[str]) -> str | None:
    for arg in args:
        if "://" in arg:
            host = urlsplit(arg).hostname
            if host and host.lower() not in _LOCAL_HOSTS:
                return host
            return None
    return None
