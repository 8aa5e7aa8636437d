"""Pure, I/O-free logic shared by the worker and replay.

Sketches and per-minute statistics (``sketch``, ``stats``, ``columns``), event-time
buckets and watermarks (``buckets``), duplicate memory (``dedup``), detectors
(``baseline``, ``drift``, ``registry``) and the alert lifecycle (``lifecycle``).
Nothing here imports faust, Kafka or ClickHouse.
"""
