/*
 * `airlock audit verify PATH`: checks the audit log's hash chain and names the first
 * altered line. Exit 0 intact, 1 broken, 2 when the file cannot be read.
 */
#include <inttypes.h>
#include <stdio.h>

#include "audit/audit.h"
#include "cmd/cli.h"

int
cli_audit_verify(const char *path)
{
    uint64_t records, bad_line;
    struct err err;
    int rc;

    err_clear(&err);
    rc = audit_verify(path, &records, &bad_line, &err);
    if (rc == -1) {
        fprintf(stderr, "airlock: %s\n", err.msg);
        return 2;
    }
    if (rc == 1) {
        printf("%s:%" PRIu64 ": audit chain broken\n", path, bad_line);
        fflush(stdout);
        return 1;
    }
    printf("ok %" PRIu64 " records\n", records);
    fflush(stdout);
    return 0;
}
