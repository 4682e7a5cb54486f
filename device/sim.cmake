# airlock-buddy-sim: the firmware core on a pseudo-terminal. Included from device/ (so the
# unit tests can drive it) and from cmd/; the guard makes the second include a no-op.
if(NOT TARGET airlock-buddy-sim)
    add_executable(airlock-buddy-sim ${CMAKE_SOURCE_DIR}/cmd/airlock-buddy-sim.c)
    target_link_libraries(airlock-buddy-sim PRIVATE airlock_buddy_fw airlock_common)
    set_target_properties(airlock-buddy-sim PROPERTIES
        RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/cmd)
endif()
