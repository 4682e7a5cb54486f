# Parsers of common/net and proxy/ (HTTP/1.1, SOCKS5): pure functions, no event loop.
airlock_unit_test(test_net airlock_common)
foreach(t test_http test_socks5)
    if(TARGET airlock_parse AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
        airlock_unit_test(${t} airlock_parse)
    endif()
endforeach()
