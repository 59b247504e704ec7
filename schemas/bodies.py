"""Full names of the session event's body records: one definition for every package.

The order is the order of the body union in ``session_event.avsc`` (a test holds them equal);
new bodies are appended, so that every older event keeps its union branch and its bytes.
"""

from __future__ import annotations

from schemas.codec import NAMESPACE

SESSION_START = f"{NAMESPACE}.SessionStart"
TERMINAL_OUTPUT = f"{NAMESPACE}.TerminalOutput"
TERMINAL_INPUT = f"{NAMESPACE}.TerminalInput"
TERMINAL_RESIZE = f"{NAMESPACE}.TerminalResize"
QUERY = f"{NAMESPACE}.Query"
QUERY_RESULT = f"{NAMESPACE}.QueryResult"
KUBERNETES_API_CALL = f"{NAMESPACE}.KubernetesApiCall"
HTTP_EXCHANGE = f"{NAMESPACE}.HttpExchange"
COMMAND = f"{NAMESPACE}.Command"
APPROVAL_REQUESTED = f"{NAMESPACE}.ApprovalRequested"
APPROVAL_DECIDED = f"{NAMESPACE}.ApprovalDecided"
POLICY_DECISION = f"{NAMESPACE}.PolicyDecision"
SESSION_END = f"{NAMESPACE}.SessionEnd"
IDLE_TIMEOUT = f"{NAMESPACE}.IdleTimeout"
OUTPUT_FLUSH = f"{NAMESPACE}.OutputFlush"

BODY_TYPES: tuple[str, ...] = (
    SESSION_START,
    TERMINAL_OUTPUT,
    TERMINAL_INPUT,
    TERMINAL_RESIZE,
    QUERY,
    QUERY_RESULT,
    KUBERNETES_API_CALL,
    HTTP_EXCHANGE,
    COMMAND,
    APPROVAL_REQUESTED,
    APPROVAL_DECIDED,
    POLICY_DECISION,
    SESSION_END,
    IDLE_TIMEOUT,
    OUTPUT_FLUSH,
)

# Requests the seal worker writes to its own input topic about a session (seal it when idle, put
# held output on record). They reuse the seq of the session's last event, so they are never a
# gateway event's digest: duplicate detection looks past them.
WORKER_REQUESTS = frozenset({IDLE_TIMEOUT, OUTPUT_FLUSH})

# Attributes the masker adds to SessionEnd, IdleTimeout and OutputFlush events: the terminal
# output and keystrokes it held back (an unfinished token could be the start of a secret), masked,
# base64. They are part of the session's terminal stream, just before the event that carries them.
OUTPUT_TAIL_ATTRIBUTE = "terminal_output_tail_b64"
INPUT_TAIL_ATTRIBUTE = "terminal_input_tail_b64"
# On a worker's OutputFlush: a password prompt is open, so what is typed next is secret until
# Enter. Set by the worker that asks for the flush, and on the record by the one that seals it.
SECRET_PROMPT_ATTRIBUTE = "terminal_secret_prompt"  # noqa: S105  (an attribute name)
