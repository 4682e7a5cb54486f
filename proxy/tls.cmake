# TLS toolkit of proxy/ (SPEC section 5): local CA, leaf minter, client-facing and upstream
# contexts. OpenSSL only; the event-loop side (bufferevent_openssl) lives in intercept.c.
add_library(airlock_tls STATIC ${CMAKE_CURRENT_LIST_DIR}/tls_ca.c
    ${CMAKE_CURRENT_LIST_DIR}/tls_mint.c ${CMAKE_CURRENT_LIST_DIR}/tls_client.c
    ${CMAKE_CURRENT_LIST_DIR}/tls_upstream.c)
target_link_libraries(airlock_tls PUBLIC airlock_common PkgConfig::OPENSSL PkgConfig::LIBEVENT)
