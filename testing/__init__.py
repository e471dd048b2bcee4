"""Tooling for tests, benches and the demo: generated scenes, random-weight checkpoints, an image server.

Nothing in ``smartseg.api``, ``smartseg.worker`` or ``smartseg.shared`` imports it.
"""
