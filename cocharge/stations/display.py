"""What the central system says to people at the charger, in their language (issue 33):
the host's price and the next booking on a charger's display (the platform's
`display_language`), and a member's personal message when its card is presented (the
member's own language, `member update --lang`, else the platform's). Sent with
messageContent.language (OCPP 2.0.1, 2.1)."""

from __future__ import annotations

# What the central system writes on a charger's display and in a member's personal message,
# per language (the display_language setting; a member's own choice for its messages).
DISPLAY_TEXTS: dict[str, dict[str, str]] = {
    "zh": {"price": "共享充电：{price} 元/千瓦时", "booked": "邻居已预约 {start}-{end}",
           "Accepted": "欢迎，{name}。可用余额 {money}", "NoCredit": "余额不足：请先充值",
           "NotAtThisTime": "此充电桩现在不对您开放", "NotAtThisLocation": "此充电桩不对您共享",
           "Blocked": "您的账户已停用：请联系运营方", "Expired": "您的卡已过期"},
    "en": {"price": "Shared charger: {price} {currency}/kWh",
           "booked": "Booked {start}-{end} by a neighbour",
           "Accepted": "Welcome, {name}. You may spend {money}",
           "NoCredit": "Not enough money: top up first",
           "NotAtThisTime": "This charger is not open to you now",
           "NotAtThisLocation": "This charger is not shared with you",
           "Blocked": "Your account is blocked: ask the operator",
           "Expired": "Your card has expired"},
}
LANGUAGES = tuple(DISPLAY_TEXTS)


def display_text(language: str, what: str, **values: str) -> str:
    """A display or personal message in `language` (Chinese when it has none)."""
    texts = DISPLAY_TEXTS.get(language, DISPLAY_TEXTS["zh"])
    return texts[what].format(**values)
