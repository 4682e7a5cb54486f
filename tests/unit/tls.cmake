# TLS toolkit: CA, minter, in-memory handshakes between the client-facing and upstream sides.
if(TARGET airlock_tls AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_tls.c)
    airlock_unit_test(test_tls airlock_tls airlock_common)
endif()
