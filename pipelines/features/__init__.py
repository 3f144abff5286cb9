"""Point-in-time features of transfers: `definitions` (the catalogue), `engine` (batch and
one-transfer computation), `table` (the warehouse's feature table), and two slower, independent
formulations of the same features that tests and the benchmark check the engine against:
`reference_sql` (DuckDB window frames) and `reference_polars` (Polars rolling windows)."""
