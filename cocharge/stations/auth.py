"""Pure rules for idTags: may this tag start a charge right now?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cocharge.stations.events import AuthStatus


@dataclass(frozen=True)
class Tag:
    tag: str
    status: str  # active | blocked
    expires_at: datetime | None


def check_tag(tag: Tag | None, now: datetime) -> AuthStatus:
    """The authorization status of `tag` at `now` (naive UTC); unknown tags are UNKNOWN."""
    if tag is None:
        return AuthStatus.UNKNOWN
    if tag.status == "blocked":
        return AuthStatus.BLOCKED
    if tag.expires_at is not None and tag.expires_at <= now:
        return AuthStatus.EXPIRED
    return AuthStatus.ACCEPTED
