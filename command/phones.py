"""Phone parsing with phonenumbers and the operator directory (``mno_prefixes``).

The directory is seeded from libphonenumber's own carrier metadata for every African
country and territory, and held in memory for a longest-prefix match that costs a
few microseconds per number.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable
from uuid import UUID

import msgspec
import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from command.errors import InvalidPhoneError
from command.ids import uuids_v4

#: ISO 3166 codes of every African country and territory that has a calling code.
AFRICAN_REGIONS = (
    "DZ AO BJ BW BF BI CV CM CF TD KM CG CD CI DJ EG GQ ER SZ ET GA GM GH GN GW KE LS LR "
    "LY MG MW ML MR MU YT MA MZ NA NE NG RE RW SH TA ST SN SC SL SO ZA SS SD TZ TG TN UG "
    "EH ZM ZW IO"
).split()

_NOT_DIALLABLE = re.compile(r"[^\d+]")

_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "invalid length",
}


class Phone(msgspec.Struct, frozen=True):
    """A number in E.164 with the region it belongs to.

    A Struct, not a frozen dataclass: an import makes one per row, and a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__`` (0.55 against
    0.07 µs, ``timeit``).
    """

    e164: str
    region: str | None

    @property
    def digits(self) -> str:
        return self.e164.lstrip("+")


_PLAIN = re.compile(r"^[\d\s+\-().]+$")
_SCIENTIFIC = re.compile(r"^\d([.,]\d+)?[eE]\+?\d+$")  # 2.54712E+11


def parse_phone(raw: object, default_region: str) -> Phone:
    """Parse a number as people write it; raise InvalidPhoneError with the reason."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneError("phone is required", field="phone")
    text = raw.strip()
    compact = _NOT_DIALLABLE.sub("", text)
    if _PLAIN.match(text):
        fast = _fast_parse(compact, default_region.upper())
        if fast is not None:
            return fast
    if compact.startswith("00"):
        # The seed's rule: a leading 00 is the international (IDD) prefix.
        text = "+" + compact[2:]
    number: phonenumbers.PhoneNumber | None = None
    failure: NumberParseException | None = None
    try:
        number = phonenumbers.parse(text, default_region.upper())
    except NumberParseException as exc:
        failure = exc
    if number is not None and phonenumbers.is_valid_number(number):
        return _phone(number)
    if (international := _as_international(compact)) is not None:
        return international
    if number is None:
        if _SCIENTIFIC.match(text):
            raise InvalidPhoneError(f"phone {raw!r} is a number in scientific notation, as a spreadsheet shows a long"
                                    " number: its last digits are lost; format the phone column as Text and save the"
                                    " file again", field="phone")
        raise InvalidPhoneError(f"phone {raw!r} is not a phone number: {failure._msg}", field="phone")
    reason = _REASONS.get(phonenumbers.is_possible_number_with_reason(number))
    region = phonenumbers.region_code_for_country_code(number.country_code)
    detail = reason or f"not a valid number for region {region}"
    raise InvalidPhoneError(f"phone {raw!r} is invalid: {detail}", field="phone")


def _phone(number: phonenumbers.PhoneNumber) -> Phone:
    """A valid parsed number as the service keeps it: E.164 and its region."""
    return Phone(e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                 region=phonenumbers.region_code_for_number(number))


def _as_international(compact: str) -> Phone | None:
    """Digits that are not a valid number of the default region but are one with a ``+`` in front.

    A spreadsheet turns ``+2348031234567`` into the number 2348031234567: exported
    contacts of other countries come back without their ``+``. Tried only after the
    default region failed, so it never changes what a valid national number means;
    digits starting with 0 (a trunk prefix) are left national.
    """
    if not compact.isdigit() or compact.startswith("0") or not 8 <= len(compact) <= 15:
        return None
    try:
        number = phonenumbers.parse("+" + compact, None)
    except NumberParseException:
        return None
    return _phone(number) if phonenumbers.is_valid_number(number) else None


def _fast_parse(compact: str, region: str) -> Phone | None:
    """The common shapes (+CC…, 00CC…, 0… with a trunk-0 region) without the full parser.

    It returns only numbers libphonenumber itself validates, built exactly as
    ``phonenumbers.parse`` builds them; anything else (and every error, so the
    reason is the parser's) goes the slow way. A test compares both on many numbers.
    """
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    elif compact.startswith("0") and _trunk_zero(region):
        digits = str(phonenumbers.country_code_for_region(region)) + compact[1:]
    else:
        return None
    if not digits.isdigit() or len(digits) > 15 or digits[0] == "0":
        return None
    # The calling code: the shortest of the first one to three digits that is one (the text
    # looked up, not an int made of each).
    code_text = digits[:1] if digits[:1] in _CALLING_CODES else digits[:2] if digits[:2] in _CALLING_CODES \
        else digits[:3] if digits[:3] in _CALLING_CODES else None
    if code_text is None:
        return None
    national = digits[len(code_text):]
    if not national or national[0] == "0":
        return None
    checks = _CHECKS.get(code_text)
    if checks is None:
        checks = _CHECKS[code_text] = _validity_checks(int(code_text)) or _LIBRARY
    if checks is not _LIBRARY:  # the calling code belongs to one region: libphonenumber's test, inlined
        valid, region = checks
        return Phone(e164=f"+{digits}", region=region) if valid(national) else None
    number = phonenumbers.PhoneNumber(country_code=int(code_text), national_number=int(national))
    if not phonenumbers.is_valid_number(number):
        return None
    return Phone(e164=f"+{digits}", region=phonenumbers.region_code_for_number(number))


_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_LIBRARY = ("library", None)  # a calling code whose numbers go through libphonenumber's own test
_CHECKS: dict[str, tuple[Callable[[str], bool], str | None]] = {}  # calling code -> _validity_checks'
_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
               "fixed_line")


def _validity_checks(code: int) -> tuple[Callable[[str], bool], str] | None:
    """``phonenumbers.is_valid_number`` for a calling code of one region, as one precompiled check.

    libphonenumber accepts a national number that matches the region's general
    description and one number type (``_number_type_helper``), each a length list
    and a pattern it recompiles through ``re`` on every call. The same tests with the
    patterns compiled once, in one function (no call per description), cost a fraction.
    Shared calling codes (+1, +7, +44, +262 …) and non-geographic ones keep the
    library's own path (None).
    """
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if len(regions) != 1 or regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(regions[0])
    if metadata is None or phonenumbers.country_code_for_valid_region(regions[0]) != code:
        return None
    descs = [getattr(metadata, name) for name in _TYPE_DESCS]
    if not metadata.same_mobile_and_fixed_line_pattern:
        descs.append(metadata.mobile)
    # Any one type makes a number valid, so the order is free: mobiles first, then fixed
    # lines (an SMS platform's numbers), and the check stops at the first that matches.
    descs.sort(key=lambda d: 0 if d is metadata.mobile else 1 if d is metadata.fixed_line else 2)
    general = _desc_check(metadata.general_desc)
    types = tuple(check for check in map(_desc_check, descs) if check is not None)
    if general is None:
        return (lambda national: False), regions[0]
    general_lengths, general_pattern = general

    def valid(national: str) -> bool:
        n = len(national)
        if (general_lengths and n not in general_lengths) or general_pattern.fullmatch(national) is None:
            return False
        for lengths, pattern in types:
            if (not lengths or n in lengths) and pattern.fullmatch(national) is not None:
                return True
        return False

    return valid, regions[0]


def _desc_check(desc: object) -> tuple[frozenset[int], re.Pattern[str]] | None:
    """``_is_number_matching_desc`` of one PhoneNumberDesc as (its possible lengths, its compiled pattern); None
    for a description without a pattern (it matches nothing)."""
    pattern_text = getattr(desc, "national_number_pattern", None)
    if not pattern_text:
        return None
    return frozenset(desc.possible_length or ()), re.compile(pattern_text)


@functools.lru_cache(maxsize=None)
def _trunk_zero(region: str) -> bool:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return metadata is not None and metadata.national_prefix_for_parsing == "0"


def reservation_id(key: bytes, account_id: UUID, e164: str) -> UUID:
    """Id of the PhoneReservation for this number: a keyed hash, never the phone."""
    digest = hmac.new(key, f"{account_id}:{e164}".encode(), hashlib.sha256).digest()
    return UUID(bytes=digest[:16], version=4)


def reservation_ids(key: bytes, account_id: UUID, e164s: list[str]) -> list[UUID]:
    """``reservation_id`` of many numbers of one account (an import batch), in one pass."""
    # One HMAC keyed and fed the account's prefix per batch, copied for each number: the
    # key's blocks and the prefix are hashed once, not once per number (1.4 us a number
    # against 3.7 for hmac.digest each time, timeit, 1,000 numbers).
    base = hmac.new(key, f"{account_id}:".encode(), "sha256")
    digests = []
    for e164 in e164s:
        h = base.copy()
        h.update(e164.encode())
        digests.append(h.digest()[:16])
    return uuids_v4(b"".join(digests))


def african_prefixes() -> list[tuple[str, str, str]]:
    """(country, prefix, operator) rows from libphonenumber's carrier metadata."""
    from phonenumbers.carrierdata import CARRIER_DATA

    codes = {phonenumbers.country_code_for_region(r): r for r in AFRICAN_REGIONS}
    rows = []
    for prefix, names in CARRIER_DATA.items():
        for length in (1, 2, 3):
            code = int(prefix[:length])
            if prefix[:length] == str(code) and code in codes:
                operator = names.get("en") or next(iter(names.values()))
                rows.append((_region_of_prefix(prefix, code), prefix, operator))
                break
    return sorted(rows, key=lambda r: r[1])


def _region_of_prefix(prefix: str, code: int) -> str:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
    if len(regions) > 1:
        # Shared calling codes (262 RE/YT, 290 SH/TA, 212 MA/EH): pad the prefix
        # to a full number and let libphonenumber tell which region owns it.
        for pad in range(4, 12):
            candidate = phonenumbers.parse("+" + prefix + "0" * pad)
            region = phonenumbers.region_code_for_number(candidate)
            if region and phonenumbers.is_valid_number(candidate):
                return region
    return regions[0] if regions else "ZZ"


class OperatorDirectory:
    """Longest-prefix match of E.164 digits against the ``mno_prefixes`` rows."""

    def __init__(self, rows: list[tuple[str, str, str]]):
        self._by_prefix = {prefix: (country, operator) for country, prefix, operator in rows}
        self._lengths = sorted({len(p) for p in self._by_prefix}, reverse=True)

    def __len__(self) -> int:
        return len(self._by_prefix)

    def longest_prefix_match(self, digits: str) -> tuple[str, str, str] | None:
        """(prefix, country, operator) of the longest known prefix of ``digits``."""
        for length in self._lengths:
            hit = self._by_prefix.get(digits[:length])
            if hit is not None and length <= len(digits):
                return digits[:length], hit[0], hit[1]
        return None

    def classify(self, phone: Phone) -> dict[str, str | None]:
        """Status fields stored on a contact: valid with its operator, or unknown_network."""
        hit = self.longest_prefix_match(phone.digits)
        if hit is None:
            return {"status": "invalid", "invalid_reason": "unknown_network",
                    "operator": None, "country": phone.region}
        return {"status": "valid", "invalid_reason": None, "operator": hit[2], "country": hit[1]}
