# The PKCS#11 backend against SoftHSM tokens made per test, and the vault on top of it
# (AIRLOCK_TEST_BACKEND=tpm2 runs the vault tests on a TPM: AIRLOCK_TEST_TCTI or a swtpm of
# their own). cmd/cli_vault.c (init/enroll/list/remove) is linked into the vault test.
airlock_unit_test(test_hsm_pkcs11 airlock_hsm airlock_common)
airlock_unit_test(test_vault airlock_vault airlock_tls airlock_hsm airlock_common PkgConfig::JANSSON)
target_sources(test_vault PRIVATE ${CMAKE_SOURCE_DIR}/cmd/cli_vault.c)
