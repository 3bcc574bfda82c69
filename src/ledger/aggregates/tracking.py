"""Tracking number formats of the well-known carriers.

Checks what is certain about a carrier's format (and its check digit where the carrier publishes one) so
that a mistyped number is refused before a marketplace sees it. Carriers without a fixed format accept any
5 to 40 letters and digits.
"""

from __future__ import annotations

import re

from ledger.aggregates.errors import InvalidCarrierError
from ledger.aggregates.values import Carrier

_UPS = re.compile(r"^1Z[0-9A-Z]{16}$")
_UPS_MAIL_INNOVATIONS = re.compile(r"^(9[0-9]{21}|[0-9]{9}|T[0-9]{10})$")
_USPS_DOMESTIC = re.compile(r"^[0-9]{20,22}$")
_S10 = re.compile(r"^[A-Z]{2}([0-9]{8})([0-9])[A-Z]{2}$")
_FEDEX = re.compile(r"^([0-9]{12}|[0-9]{15}|[0-9]{20}|[0-9]{22}|[0-9]{34})$")
_DHL = re.compile(r"^([0-9]{10}|[0-9]{11}|JJD[0-9A-Z]{8,20}|[A-Z]{3}[0-9]{7,20})$")
_GENERIC = re.compile(r"^[0-9A-Z-]{5,40}$")
_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def _carrier_key(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


# The canonical codes and the spellings marketplaces use ("UPS", "FedEx", "Amazon Logistics", "Royal Mail"),
# compared without case, spaces, hyphens or underscores.
_CARRIERS = {_carrier_key(c.value): c for c in Carrier}


def parse_carrier(text: str) -> Carrier:
    """The carrier `text` names, in its canonical code or a marketplace's spelling, whatever its case."""
    carrier = _CARRIERS.get(_carrier_key(text))
    if carrier is None:
        known = ", ".join(c.value for c in Carrier)
        raise InvalidCarrierError(f"unknown carrier {text!r}; one of {known}", "carrier")
    return carrier


def normalize_tracking_number(raw: str) -> str:
    """Upper case, without the spaces people paste from labels."""
    return "".join(raw.split()).upper()


def ups_check_digit(body: str) -> int:
    """UPS 1Z check digit over the 15 characters between `1Z` and the check digit."""
    total = 0
    for index, char in enumerate(body):
        value = int(char) if char.isdigit() else (ord(char) - 63) % 10
        total += value * (2 if index % 2 else 1)
    return (10 - total % 10) % 10


def s10_check_digit(serial: str) -> int:
    """UPU S10 check digit (international postal items: USPS, Royal Mail, Canada Post...)."""
    remainder = 11 - sum(int(d) * w for d, w in zip(serial, _S10_WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(remainder, remainder)


def _is_ups(number: str) -> bool:
    if _UPS.match(number):
        return ups_check_digit(number[2:17]) == int(number[17]) if number[17].isdigit() else False
    return bool(_UPS_MAIL_INNOVATIONS.match(number))


def _is_s10(number: str) -> bool:
    match = _S10.match(number)
    return bool(match) and s10_check_digit(match.group(1)) == int(match.group(2))  # type: ignore[union-attr]


def is_valid_tracking_number(carrier: Carrier, number: str) -> bool:
    """Whether `number` (already normalized) has the shape `carrier` uses."""
    if carrier is Carrier.UPS:
        return _is_ups(number)
    if carrier is Carrier.USPS:
        return bool(_USPS_DOMESTIC.match(number)) or _is_s10(number)
    if carrier is Carrier.FEDEX:
        return bool(_FEDEX.match(number))
    if carrier is Carrier.DHL:
        return bool(_DHL.match(number))
    if carrier in (Carrier.ROYAL_MAIL, Carrier.CANADA_POST):
        return _is_s10(number) or bool(_GENERIC.match(number))
    return bool(_GENERIC.match(number))
