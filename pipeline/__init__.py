"""The Ray Data pipeline: discover -> read + decode -> GhostNet actors -> Parquet -> commit."""
