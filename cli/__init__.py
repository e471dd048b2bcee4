"""The ``smartseg`` command and what it starts on one machine: the launcher (``smartseg up``) and the demo.

The one entry layer: it may import every other package; nothing imports it but tests and benches.
"""
