"""Everything that writes to the outside: ClickHouse, the DLQ and stats topics."""
