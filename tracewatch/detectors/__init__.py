"""Pure, I/O-free logic shared by the worker and replay.

Sketches and per-minute statistics (``sketch``, ``stats``, ``columns``), event-time
buckets and watermarks (``buckets``), duplicate memory (``dedup``), detectors
(``baseline``, ``drift``, ``registry``), the alert lifecycle (``lifecycle``), the
per-route alert engine over closed minutes (``route_minutes``, ``engine``), the
per-event circuit breakers (``breakers``), and both built from the settings
(``judges``). Nothing here imports faust, Kafka or ClickHouse.
"""
