"""Point-in-time features of transfers: `definitions` (the catalogue), `engine` (batch and
one-transfer computation), `reference_sql` (the same features as plain DuckDB SQL, slower)."""
