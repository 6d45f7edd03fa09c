"""Phone parsing and the operator directory (no I/O)."""

from __future__ import annotations

import random
import uuid

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from command.errors import InvalidPhoneError
from command.phones import AFRICAN_REGIONS, OperatorDirectory, african_prefixes, parse_phone, reservation_id


def _slow(raw: str, region: str) -> str | None:
    """What libphonenumber alone says: the E.164 form of a valid number, else None."""
    text = raw.strip()
    compact = "".join(ch for ch in text if ch.isdigit() or ch == "+")
    if compact.startswith("00"):
        text = "+" + compact[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _samples(seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    samples = []
    for region in AFRICAN_REGIONS:
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            for _ in range(15):
                digits = national[:2] + "".join(rng.choice("0123456789") for _ in national[2:])
                number = phonenumbers.PhoneNumber(country_code=example.country_code, national_number=int(digits))
                for fmt in (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL):
                    samples.append((phonenumbers.format_number(number, fmt), region))
                samples.append(("00" + phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:], region))
    return samples


def test_fast_path_agrees_with_libphonenumber_on_thousands_of_numbers() -> None:
    samples = _samples()
    assert len(samples) > 5000
    agreed = 0
    for raw, region in samples:
        expected = _slow(raw, region)
        try:
            got = parse_phone(raw, region).e164
        except InvalidPhoneError:
            got = None
        assert got == expected, (raw, region)
        agreed += expected is not None
    assert agreed > 2000  # plenty of valid numbers among them


@pytest.mark.parametrize("raw", ["0712 345 678", "+254 712-345-678", "(0712) 345678", "00254712345678",
                                 "254712345678", "+254712345678"])
def test_common_kenyan_formats_normalise_to_one_e164(raw: str) -> None:
    assert parse_phone(raw, "KE").e164 == "+254712345678"


@pytest.mark.parametrize("raw, reason", [("", "required"), ("hello", "not a phone number"),
                                         ("0712", "too short"), ("+2547123456789999", "too long"),
                                         ("+999 123 456", "not a phone number")])
def test_invalid_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneError, match=reason):
        parse_phone(raw, "KE")


@pytest.mark.parametrize("raw, e164", [("2348031234567", "+2348031234567"), ("27821234567", "+27821234567"),
                                       ("233241234567", "+233241234567"), ("254712345678", "+254712345678"),
                                       ("0712345678", "+254712345678"), ("712345678", "+254712345678")])
def test_digits_a_spreadsheet_stripped_of_their_plus_are_read_as_international(raw: str, e164: str) -> None:
    """A CSV export opened in a spreadsheet comes back with +2348031234567 as 2348031234567."""
    assert parse_phone(raw, "KE").e164 == e164


def test_a_national_number_keeps_its_meaning_and_a_trunk_zero_stays_national() -> None:
    assert parse_phone("0803 123 4567", "NG").e164 == "+2348031234567"
    with pytest.raises(InvalidPhoneError):
        parse_phone("02348031234567", "KE")  # a trunk 0 in front: national, and not a Kenyan number


def test_scientific_notation_says_what_happened() -> None:
    with pytest.raises(InvalidPhoneError, match="scientific notation.*format the phone column as Text"):
        parse_phone("2.54712E+11", "KE")


def test_directory_covers_every_african_region_with_longest_prefix_match() -> None:
    rows = african_prefixes()
    assert len(rows) > 1000
    assert len({country for country, _, _ in rows}) >= 55
    directory = OperatorDirectory(rows)
    assert directory.classify(parse_phone("0712345678", "KE"))["operator"] == "Safaricom"
    assert directory.classify(parse_phone("+2348031234567", "KE"))["operator"] == "MTN"
    unknown = directory.classify(parse_phone("+44 7911 123456", "KE"))
    assert (unknown["status"], unknown["invalid_reason"], unknown["operator"]) == ("invalid", "unknown_network", None)
    longest = OperatorDirectory([("KE", "2547", "Generic"), ("KE", "254712", "Specific")])
    assert longest.longest_prefix_match("254712345678") == ("254712", "KE", "Specific")
    assert longest.longest_prefix_match("254799000000") == ("2547", "KE", "Generic")


def test_reservation_id_is_keyed_and_hides_the_number() -> None:
    account = uuid.uuid4()
    a = reservation_id(b"key-1", account, "+254712345678")
    assert a == reservation_id(b"key-1", account, "+254712345678")
    assert a != reservation_id(b"key-2", account, "+254712345678")
    assert a != reservation_id(b"key-1", uuid.uuid4(), "+254712345678")
    assert "254712345678" not in a.hex
