"""Names of the columns the tool itself adds to rows."""

# Every row's identity: the source key's value as text (or the file path for audio).
KEY = "_key"

# The content hash of what decides a row's result (its text, per-row options and kept
# columns) when it was processed: a row whose hash changed is processed again.
ROW_HASH = "_hash"

# An image job's image bytes, from the task (which reads them from the answer) to the
# output's image writer, which writes the file and drops the column: never stored.
IMAGE_DATA = "_image"
