/*
 * Private to audit/: the direct JSON encoder audit_log uses for each line. It writes the
 * same bytes jansson's json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) gave for the record
 * object (the unit test compares the two), without building a tree or allocating.
 */
#ifndef AIRLOCK_AUDIT_AUDIT_INTERNAL_H
#define AIRLOCK_AUDIT_AUDIT_INTERNAL_H

#include <stddef.h>

#include "audit/audit.h"

/* String fields in a line (ts and prev included); each escapes to at most 6 bytes a byte. */
#define AUDIT_LINE_STRINGS 12
/* Longest line audit_line_encode can produce, newline included: a bound, not a typical size. */
#define AUDIT_LINE_MAX (AUDIT_LINE_STRINGS * (6 * AUDIT_FIELD_MAX + 2) + 512)

_Static_assert(AUDIT_LINE_MAX < AUDIT_VERIFY_LINE_MAX, "audit lines must stay verifiable");

/*
 * Encodes r as one compact JSON object with keys in SPEC order, ts first and prev last,
 * followed by '\n', into out (AUDIT_LINE_MAX bytes). Returns the length written, newline
 * included. Strings are cut at AUDIT_FIELD_MAX on a UTF-8 boundary ("path" first at its
 * '?'); a string that is not valid UTF-8 has every byte >= 0x80 replaced by '?'.
 */
size_t audit_line_encode(char *out, const struct audit_record *r, const char *ts, const char *prev);

#endif
