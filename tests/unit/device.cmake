# The buddy device: protocol, firmware core, and the daemon link against the firmware core
# on a real pseudo-terminal pair (pairing runs the device side in a thread).
airlock_unit_test(test_buddy airlock_device)
airlock_unit_test(test_firmware airlock_buddy_fw PkgConfig::OPENSSL)
airlock_unit_test(test_buddy_link airlock_device)
find_package(Threads REQUIRED)
target_link_libraries(test_buddy_link PRIVATE Threads::Threads)
# The simulator tests drive the real binary; it must be built first.
add_dependencies(test_buddy_link airlock-buddy-sim)
