# policy/: loader (good and bad configs, exact PATH:LINE:COL), matcher, verdicts, auth.
if(TARGET airlock_policy)
    airlock_unit_test(test_policy airlock_policy)
endif()
# policy_load_buffer() and the inputs tests/fuzz/fuzz_policy found.
if(TARGET airlock_policy)
    airlock_unit_test(test_policy_fuzz airlock_policy)
endif()
