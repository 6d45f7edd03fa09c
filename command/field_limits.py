"""What a contact's fields may hold: the caps the API's request Structs and the importer both apply.

The API refuses a longer field (422 naming it); an import skips the row instead
(``field_too_long`` in its report), so a file with one bad row still imports the rest.
"""

MAX_NAME_CHARS = 200  # first_name, last_name
MAX_EMAIL_CHARS = 320  # the longest address RFC 5321 allows (64 + @ + 255)
MAX_NOTES_CHARS = 5000
MAX_PHONE_CHARS = 64  # the number as written, before it is parsed
MAX_TAGS = 100
MAX_TAG_CHARS = 64
# The text fields an import checks row by row, with their caps.
MAX_TEXT = {"first_name": MAX_NAME_CHARS, "last_name": MAX_NAME_CHARS, "email": MAX_EMAIL_CHARS,
            "notes": MAX_NOTES_CHARS}
