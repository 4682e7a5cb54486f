airlock_unit_test(test_approvals airlock_approvals)
# The control socket, plus the CLI commands that use it (cmd/cli_control.c has no other
# dependencies, so it is linked straight into the test).
airlock_unit_test(test_control airlock_approvals)
target_sources(test_control PRIVATE ${CMAKE_SOURCE_DIR}/cmd/cli_control.c)
find_package(Threads REQUIRED)
target_link_libraries(test_control PRIVATE Threads::Threads)
