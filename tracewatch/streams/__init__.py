"""The streaming worker: topics, the batch ingest stage and the faust app (wiring only)."""
