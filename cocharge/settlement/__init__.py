"""Settlement: money, tariffs and CDRs, discounts, fee splits, the ledger, the revenue calculator."""
