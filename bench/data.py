"""Deterministic, realistic contacts for the benchmarks.

Contact ``i`` always gets the same phone, names, tags, lists and opt-out flag, so a
seed that stops half way can resume where it stopped and two runs of one size seed
the same data. Phones are unique by construction (no collisions to retry).
"""

from __future__ import annotations

import random
import uuid
import zlib
from dataclasses import dataclass

import phonenumbers

from command.phones import Phone

#: (region, weight in twentieths, mobile prefixes after the country code, subscriber digits).
#: Every prefix was checked with phonenumbers: valid, type MOBILE, known operator.
COUNTRIES = (
    ("KE", 7, ("710", "711", "712", "720", "722", "723", "740", "757", "768", "790", "110", "111",
               "733", "734", "780"), 6),
    ("NG", 5, ("803", "806", "813", "816", "703", "706", "810", "805", "807", "815", "802", "808",
               "812", "701", "902", "901"), 7),
    ("GH", 2, ("24", "54", "55", "20", "50", "27", "57", "26"), 7),
    ("UG", 2, ("77", "78", "70", "75", "76", "74"), 7),
    ("TZ", 2, ("71", "65", "67", "68", "69", "75", "76", "74", "78"), 7),
    ("ZA", 2, ("82", "83", "84", "72", "73", "76", "79"), 7),
)
#: bucket (i % 20) -> (country row, rank of the bucket within that country)
_BUCKETS = [(row, rank) for row in COUNTRIES for rank in range(row[1])]

FIRST_NAMES = ("Grace", "Peter", "Mary", "John", "Faith", "James", "Mercy", "David", "Esther", "Joseph",
               "Amina", "Chinedu", "Ngozi", "Kwame", "Abena", "Thabo", "Lerato", "Aisha", "Musa", "Fatuma",
               "Brian", "Emeka", "Halima", "Kofi", "Zanele")
LAST_NAMES = ("Wanjiku", "Otieno", "Mwangi", "Kamau", "Njoroge", "Okafor", "Adeyemi", "Okonkwo", "Mensah",
              "Boateng", "Nkosi", "Dlamini", "Mokoena", "Mutua", "Achieng", "Nakato", "Mugisha", "Mollel",
              "Juma", "Bello", "Abubakar", "Owusu", "Ndlovu", "Kiprop", "Chebet")
TAGS = ("vip", "nairobi", "lagos", "accra", "kampala", "newsletter", "promo", "loyalty", "retail",
        "wholesale", "b2b", "student", "staff", "event-2024", "event-2025", "referral", "churn-risk",
        "high-value", "sms-only", "beta")
#: (name, share of contacts that belong to it); memberships are independent draws.
LISTS = (("Nairobi customers", 0.10), ("Newsletter subscribers", 0.05), ("VIP customers", 0.02),
         ("Lagos promo March", 0.03), ("Event 2025 attendees", 0.01))
OPTED_OUT_SHARE = 0.10
_MULTIPLIER = 7_654_321  # odd, not a multiple of 5: a bijection on 0 .. 10**k - 1


def phone_for(i: int) -> Phone:
    """A unique, valid mobile number for contact ``i`` (weights: KE 35%, NG 25%, others 10%)."""
    (region, weight, prefixes, digits), rank = _BUCKETS[i % 20]
    j = (i // 20) * weight + rank  # index among this country's contacts
    prefix = prefixes[j % len(prefixes)]
    space = 10 ** digits
    serial = j // len(prefixes)
    if serial >= space:
        raise ValueError(f"too many contacts for {region}{prefix}")
    # Scatter with an offset of its own per prefix, so numbers look random and their
    # trailing digits do not repeat in step from one prefix to the next.
    subscriber = (serial * _MULTIPLIER + zlib.crc32(f"{region}{prefix}".encode())) % space
    code = phonenumbers.country_code_for_region(region)
    return Phone(e164=f"+{code}{prefix}{subscriber:0{digits}d}", region=region)


@dataclass(frozen=True)
class SeedContact:
    index: int
    phone: Phone
    pii: dict
    tags: list[str]
    list_ids: list[uuid.UUID]
    is_opted_out: bool


def contacts(start: int, stop: int, list_ids: list[uuid.UUID], seed: int = 20250101) -> list[SeedContact]:
    """Contacts ``start`` .. ``stop - 1``; contact ``i`` is the same whatever the batches."""
    out = []
    for i in range(start, stop):
        rng = random.Random(seed * 10_000_019 + i)
        phone = phone_for(i)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        pii = {"first_name": first, "last_name": last, "phone": phone.e164}
        if rng.random() < 0.3:
            pii["email"] = f"{first}.{last}{i}@example.com".lower()
        if rng.random() < 0.05:
            pii["notes"] = rng.choice(("Prefers Swahili", "Call after 5pm", "Met at the expo",
                                       "Asked about bulk pricing"))
        tags = rng.sample(TAGS, rng.choice((0, 1, 1, 2, 2, 3)))
        lists = [lid for lid, (_, share) in zip(list_ids, LISTS) if rng.random() < share]
        out.append(SeedContact(index=i, phone=phone, pii=pii, tags=tags, list_ids=lists,
                               is_opted_out=rng.random() < OPTED_OUT_SHARE))
    return out
