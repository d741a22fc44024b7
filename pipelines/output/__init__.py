"""Durable, exactly-once output: run journals and the Parquet files they merge into."""
