"""Load management on a shared supply (SPEC §10, docs/load-management.md).

A package of its own, beside `stations/` (which speaks OCPP) and `settlement/` (money):
`allocate` and `pv` are pure (no I/O, no clock) so that the benchmark, the property tests
and the gateway run the same code; `sites` reads and changes the stored site trees (the
CLI); `manager` is the gateway's side: it keeps the sites and their sessions in memory,
runs the allocation and applies it at the chargers.
"""
