"""Settlement: tariffs, fee splits, the ledger and rewards (to be built; see the issues)."""
