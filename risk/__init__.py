"""Risk scoring of session events: SQL, Kubernetes, shell and HTTP rules, per-identity behaviour.

Pure logic and plain state objects; imports nothing of Blackbox (only `risk.cli` reads `schemas`).
"""

# First: importing it refuses a build older than these sources (blackbox/compiled.py, which
# imports only the standard library).
import blackbox.compiled  # noqa: F401
from risk.behaviour import IdentityState
from risk.model import RULES, Hit
from risk.policy import KindPolicy, Policy, PolicyError, default_policy, load_policy, parse_policy
from risk.scorer import RiskScorer, SessionRiskSummary, StatefulScorer, combine, identity_key

__all__ = [
    "RULES",
    "Hit",
    "IdentityState",
    "KindPolicy",
    "Policy",
    "PolicyError",
    "RiskScorer",
    "SessionRiskSummary",
    "StatefulScorer",
    "combine",
    "default_policy",
    "identity_key",
    "load_policy",
    "parse_policy",
]
