"""Names of the columns the tool itself adds to rows."""

# Every row's identity: the source key's value as text (or the file path for audio).
KEY = "_key"
