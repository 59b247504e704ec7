"""Gateway side: session event builder, emitter SDK, asciicast import, demo and load generators.

Owns what gateways put on ``blackbox.events``; of Blackbox's packages it imports only ``schemas``.
"""
