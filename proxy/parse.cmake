# Protocol parsers of proxy/ (HTTP/1.1, SOCKS5): pure functions, also built into the fuzzers.
add_library(airlock_parse STATIC ${CMAKE_CURRENT_LIST_DIR}/http.c
    ${CMAKE_CURRENT_LIST_DIR}/http_target.c ${CMAKE_CURRENT_LIST_DIR}/http_chunked.c
    ${CMAKE_CURRENT_LIST_DIR}/socks5.c)
target_link_libraries(airlock_parse PUBLIC airlock_common)
