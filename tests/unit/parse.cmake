# Parsers of common/net and proxy/ (HTTP/1.1, SOCKS5): pure functions, no event loop.
airlock_unit_test(test_net airlock_common)
if(TARGET airlock_parse)
    airlock_unit_test(test_http airlock_parse)
    airlock_unit_test(test_socks5 airlock_parse)
endif()
