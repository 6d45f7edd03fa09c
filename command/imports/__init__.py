"""Contact imports: reading CSV and XLSX files into rows, and the service that imports rows in batches.

- ``formats``: CSV or XLSX, told by the first bytes; the errors that refuse a file.
- ``limits``: what one file may hold (``FileLimits``).
- ``csv_reader``, ``xlsx_reader``: records of each format, streamed and bounded.
- ``rows``: the header, the column mapping and the cleaned ``ImportRow``s (``open_rows``).
- ``cells``: the formula escape and the tag separators, shared with exports and the API.
- ``service``: ``ImportService``, rows in, batch events out.
"""
