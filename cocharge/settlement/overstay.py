"""The overstay idle fee (SPEC §2): a money rule, pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class IdleFeeRule:
    grace_s: int = 15 * 60
    fen_per_minute: int = 50
    cap_fen: int = 6000


def idle_fee(rule: IdleFeeRule, charging_ended: datetime, unplugged: datetime) -> tuple[int, int]:
    """(billable minutes, fee in fen): full minutes after the grace period, capped."""
    idle_s = (unplugged - charging_ended).total_seconds() - rule.grace_s
    minutes = max(0, int(idle_s // 60))
    return minutes, min(rule.cap_fen, minutes * rule.fen_per_minute)
