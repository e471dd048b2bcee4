"""Money: prices and amounts are ``Decimal`` US dollars at the edges and whole micro-dollars inside (Redis
counts them with HINCRBY), never floats. A job is billed in the atomic step that makes it ``succeeded``;
failed and canceled jobs never are, and a run that found nothing (every prompt ``no_match``) is billed only
where ``SMARTSEG_BILL_NO_MATCH`` says so."""

from __future__ import annotations

from decimal import Decimal

MICRO_USD = 1_000_000
MICRO = Decimal("0.000001")
SECONDS_PER_DAY = 86_400  # usage is counted per UTC day, as days since 1970-01-01


def to_micro_usd(amount_usd: Decimal) -> int:
    """Whole micro-dollars; ValueError for an amount finer than that."""
    micro = amount_usd * MICRO_USD
    if micro != micro.to_integral_value():
        raise ValueError(f"{amount_usd} USD is finer than a micro-dollar")
    return int(micro)


def usd(micro_usd: int) -> str:
    """An amount as JSON carries it: a decimal string, exact ("0.37", "12.5", "0")."""
    amount = (Decimal(micro_usd) * MICRO).normalize()
    return format(amount, "f")
