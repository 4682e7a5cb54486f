airlock_unit_test(test_audit airlock_audit PkgConfig::JANSSON)
# The `airlock audit verify` command is tested here too; it has no other dependencies.
target_sources(test_audit PRIVATE ${CMAKE_SOURCE_DIR}/cmd/cli_audit.c)
# The line encoder against the jansson writer it replaced (byte-identical lines).
airlock_unit_test(test_audit_line airlock_audit PkgConfig::JANSSON)
# The sync thread: at most one fdatasync per interval; a failed one fails the next append.
airlock_unit_test(test_audit_sync airlock_audit)
