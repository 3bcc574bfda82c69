"""Tracking number formats and check digits of the well-known carriers."""

from __future__ import annotations

import pytest

from ledger.aggregates.errors import InvalidCarrierError, InvalidTrackingNumberError
from ledger.aggregates.rules import check_tracking_number
from ledger.aggregates.tracking import (
    is_valid_tracking_number,
    normalize_tracking_number,
    parse_carrier,
    s10_check_digit,
    ups_check_digit,
)
from ledger.aggregates.values import Carrier

# Published examples: a UPS 1Z number and a UPU S10 item number, both with correct check digits.
UPS_EXAMPLE = "1Z999AA10123456784"
S10_EXAMPLE = "AA473124829GB"
# UPU S10 weights for the eight serial digits.
S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


@pytest.mark.parametrize(
    ("carrier", "number"),
    [
        (Carrier.UPS, UPS_EXAMPLE),
        (Carrier.UPS, "92" + "0" * 20),  # Mail Innovations, 22 digits starting with 9
        (Carrier.UPS, "T1234567890"),
        (Carrier.USPS, "9" + "4" * 19),  # 20 digits
        (Carrier.USPS, "9" * 21),
        (Carrier.USPS, "94001118992231974284"),
        (Carrier.USPS, "9400111899223197428490"),  # 22 digits
        (Carrier.USPS, S10_EXAMPLE),
        (Carrier.FEDEX, "123456789012"),
        (Carrier.FEDEX, "123456789012345"),
        (Carrier.FEDEX, "1" * 20),
        (Carrier.FEDEX, "1" * 22),
        (Carrier.FEDEX, "1" * 34),
        (Carrier.DHL, "1234567890"),
        (Carrier.DHL, "12345678901"),
        (Carrier.DHL, "JJD0001234567890"),
        (Carrier.DHL, "ABC1234567"),
        (Carrier.ROYAL_MAIL, S10_EXAMPLE),
        (Carrier.CANADA_POST, "1234567890123456"),
        (Carrier.AMAZON_LOGISTICS, "TBA123456789000"),
        (Carrier.ONTRAC, "C11111111111111"),
        (Carrier.OTHER, "AB-12345"),
    ],
)
def test_well_formed_numbers_are_valid(carrier, number):
    """Numbers in a carrier's published formats are accepted for that carrier."""
    assert is_valid_tracking_number(carrier, number)
    assert check_tracking_number(carrier, number) == number


@pytest.mark.parametrize(
    ("carrier", "number"),
    [
        (Carrier.UPS, "1Z999AA1012345678"),  # one character short
        (Carrier.UPS, "1Z999AA101234567845"),  # one character long
        (Carrier.UPS, "1Z999AA1012345678A"),  # letter where the check digit goes
        (Carrier.UPS, "123456789012"),
        (Carrier.USPS, "9" * 19),
        (Carrier.USPS, "9" * 23),
        (Carrier.USPS, "AA473124828GB"),  # S10 with a wrong check digit
        (Carrier.USPS, "A473124829GB"),
        (Carrier.FEDEX, "12345678901"),
        (Carrier.FEDEX, "1234567890123"),
        (Carrier.FEDEX, "12345678901234"),
        (Carrier.FEDEX, UPS_EXAMPLE),
        (Carrier.DHL, "123456789"),
        (Carrier.DHL, "AB1234567"),
        (Carrier.ROYAL_MAIL, "AB1"),
        (Carrier.OTHER, "ABCD"),  # too short
        (Carrier.OTHER, "A" * 41),  # too long
        (Carrier.OTHER, "ABC!12345"),
    ],
)
def test_malformed_numbers_are_invalid(carrier, number):
    """Numbers outside a carrier's formats are refused with InvalidTrackingNumberError."""
    assert not is_valid_tracking_number(carrier, number)
    with pytest.raises(InvalidTrackingNumberError) as caught:
        check_tracking_number(carrier, number)
    assert caught.value.field == "tracking_number"


@pytest.mark.parametrize("digit", [d for d in "0123456789" if d != UPS_EXAMPLE[-1]])
def test_ups_number_with_another_check_digit_is_invalid(digit):
    """A UPS 1Z number is valid with its own check digit and with no other."""
    assert not is_valid_tracking_number(Carrier.UPS, UPS_EXAMPLE[:-1] + digit)


def test_ups_check_digit_matches_the_example():
    """The UPS check digit of the example's body is the example's last digit."""
    assert ups_check_digit(UPS_EXAMPLE[2:17]) == int(UPS_EXAMPLE[17])


@pytest.mark.parametrize("digit", [d for d in "0123456789" if d != S10_EXAMPLE[10]])
def test_usps_s10_number_with_another_check_digit_is_invalid(digit):
    """A USPS S10 number is valid with its own check digit and with no other."""
    assert not is_valid_tracking_number(Carrier.USPS, S10_EXAMPLE[:10] + digit + S10_EXAMPLE[11:])


@pytest.mark.parametrize(
    "serial",
    ["47312482", "00000000", "00060000", "12345678", "99999999", "10000000"],
)
def test_s10_check_digit_follows_the_upu_rule(serial):
    """The S10 check digit is 11 minus the weighted sum mod 11, with 10 -> 0 and 11 -> 5."""
    remainder = 11 - sum(int(d) * w for d, w in zip(serial, S10_WEIGHTS, strict=True)) % 11
    expected = 0 if remainder == 10 else 5 if remainder == 11 else remainder

    assert s10_check_digit(serial) == expected
    assert is_valid_tracking_number(Carrier.USPS, f"RR{serial}{expected}US")


def test_s10_special_remainders():
    """A weighted sum divisible by 11 gives check digit 5; a sum of 1 mod 11 gives 0."""
    assert s10_check_digit("00000000") == 5  # sum 0 -> 11 - 0 = 11 -> 5
    assert s10_check_digit("00060000") == 0  # sum 12 -> 11 - 1 = 10 -> 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(" 1z 999 aa1 0123456784 ", UPS_EXAMPLE), ("aa473124829gb", S10_EXAMPLE), ("\t12 34\n56", "123456")],
)
def test_normalization_removes_spaces_and_upper_cases(raw, expected):
    """Tracking numbers are compared without whitespace and in upper case."""
    assert normalize_tracking_number(raw) == expected


def test_pasted_number_is_normalized_before_validation():
    """A valid number pasted with spaces and lower case is accepted and stored normalized."""
    assert check_tracking_number(Carrier.UPS, "1z999aa1 0123 456 784") == UPS_EXAMPLE


@pytest.mark.parametrize("carrier", list(Carrier))
@pytest.mark.parametrize("number", ["", "   ", "\n"])
def test_empty_number_is_refused_for_every_carrier(carrier, number):
    """Every carrier needs a tracking number."""
    with pytest.raises(InvalidTrackingNumberError):
        check_tracking_number(carrier, number)


@pytest.mark.parametrize(
    ("spelling", "carrier"),
    [
        ("UPS", Carrier.UPS),
        ("FedEx", Carrier.FEDEX),
        ("USPS", Carrier.USPS),
        ("DHL", Carrier.DHL),
        ("OnTrac", Carrier.ONTRAC),
        ("Amazon Logistics", Carrier.AMAZON_LOGISTICS),
        ("amazon_logistics", Carrier.AMAZON_LOGISTICS),
        ("Royal Mail", Carrier.ROYAL_MAIL),
        ("CANADA-POST", Carrier.CANADA_POST),
        (" other ", Carrier.OTHER),
    ],
)
def test_carriers_parse_from_marketplace_spellings(spelling: str, carrier: Carrier) -> None:
    """Marketplace spellings and canonical codes, in any case and spacing, name the same carrier."""
    assert parse_carrier(spelling) is carrier


@pytest.mark.parametrize("text", ["", "Pony Express", "UPSS"])
def test_unknown_carriers_are_invalid_input(text: str) -> None:
    """A carrier the ledger does not know is 422-class `invalid-carrier`, naming the field."""
    with pytest.raises(InvalidCarrierError) as raised:
        parse_carrier(text)
    assert raised.value.field == "carrier"
