"""The audit trail: signed entries, keys and their rotation, the hash-chained log, verification, witnesses."""
