"""Who gets what of a session's paid amount (SPEC §3): pure rules, exact in fen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from cocharge.settlement.money import MoneyError, split_by_ratios


@dataclass(frozen=True)
class SplitTerms:
    """A station's revenue-share terms (`cocharge split set`)."""

    model: str = "host"                      # host | property
    onboarded_at: datetime | None = None     # host's first day on the platform
    green: bool = False                      # the host's own solar
    platform_pct: Decimal = Decimal(10)
    green_platform_pct: Decimal = Decimal(5)
    free_days: int = 30                      # no commission in the host's first days
    property_pct: Decimal = Decimal(30)      # property model: the property's share
    host: str | None = None                  # account names of the parties
    property: str | None = None
    operator: str | None = None
    # When the property's terms began: the property sees the station's sessions from then on,
    # never its earlier history (set when the property is named or changed).
    property_since: datetime | None = None

    def check(self) -> SplitTerms:
        if self.model not in ("host", "property"):
            raise MoneyError(f"split model {self.model!r}: choose host or property")
        for name in ("platform_pct", "green_platform_pct", "property_pct"):
            value = getattr(self, name)
            if not Decimal(0) <= value <= Decimal(100):
                raise MoneyError(f"{name.replace('_pct', '')} share {value} % is not between 0 and 100")
        if self.model == "property" and self.property_pct + self.platform_pct > 100:
            raise MoneyError("property and platform shares exceed 100 %")
        if self.free_days < 0:
            raise MoneyError("free days cannot be negative")
        return self


def platform_pct(terms: SplitTerms, at: datetime) -> Decimal:
    """The platform's commission for a session ending at `at`."""
    if (terms.model == "host" and terms.onboarded_at is not None
            and at < terms.onboarded_at + timedelta(days=terms.free_days)):
        return Decimal(0)
    return terms.green_platform_pct if terms.green else terms.platform_pct


def shares(terms: SplitTerms, at: datetime) -> list[tuple[str, Decimal]]:
    """(party, percent) in a fixed order; percents sum to 100."""
    platform = platform_pct(terms, at)
    if terms.model == "host":
        return [("host", Decimal(100) - platform), ("platform", platform)]
    return [("property", terms.property_pct), ("platform", platform),
            ("operator", Decimal(100) - terms.property_pct - platform)]


def split_amount(total_fen: int, terms: SplitTerms, at: datetime) -> list[tuple[str, int]]:
    """The paid amount shared out; parts sum to `total_fen` to the fen."""
    parts = shares(terms, at)
    if total_fen == 0:
        return [(party, 0) for party, _ in parts]
    amounts = split_by_ratios(total_fen, [pct for _, pct in parts])
    return list(zip([p for p, _ in parts], amounts, strict=True))
