"""Masking: finds personal, health and secret values in session content and replaces them in place.

Owns detection, policies, blind indexes and the streaming terminal masker; imports nothing of Blackbox.
"""

# First: importing it refuses a build older than these sources (blackbox/compiled.py, which
# imports only the standard library).
import blackbox.compiled  # noqa: F401
from masking.engine import Finding, MaskingEngine, TerminalStreamMasker, blind_index
from masking.event_masker import EventMasker
from masking.policy import Policy, PolicyError, PolicySet, load_default_policy, load_policy

__all__ = [
    "EventMasker",
    "Finding",
    "MaskingEngine",
    "Policy",
    "PolicyError",
    "PolicySet",
    "TerminalStreamMasker",
    "blind_index",
    "load_default_policy",
    "load_policy",
]
