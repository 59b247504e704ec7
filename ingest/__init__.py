"""Gateway side: session event builder, emitter SDK, asciicast import, demo and load generators.

Owns what gateways put on ``blackbox.events``; imports only ``schemas`` (never streams, replay or api).
"""
