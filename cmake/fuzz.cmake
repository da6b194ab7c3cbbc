# libFuzzer targets (GENEVA_FUZZ=ON, clang): one binary per target, all from
# tests/fuzz/harness.c, which runs the function of tests/fuzz/targets.lua
# named by FUZZ_TARGET in a geneva host (libgeneva.a: our bindings and the
# embedded stdlib). Seed corpora and dictionaries: tests/fuzz/<target>/ and
# tests/fuzz/<target>.dict. Run them with scripts/fuzz.
set(GENEVA_FUZZ_TARGETS json yaml csv_jsonl zip_extract recipe kubeconfig)
set(GENEVA_FUZZ_TARGETS_BIN "")
foreach(t ${GENEVA_FUZZ_TARGETS})
  add_executable(fuzz_${t} ${CMAKE_SOURCE_DIR}/tests/fuzz/harness.c)
  list(APPEND GENEVA_FUZZ_TARGETS_BIN fuzz_${t})
  target_compile_options(fuzz_${t} PRIVATE ${GENEVA_WARNINGS})
  target_compile_definitions(fuzz_${t} PRIVATE FUZZ_TARGET="${t}"
    FUZZ_LUA="${CMAKE_SOURCE_DIR}/tests/fuzz/targets.lua")
  target_link_libraries(fuzz_${t} PRIVATE geneva_static)
  target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
endforeach()
add_custom_target(fuzzers DEPENDS ${GENEVA_FUZZ_TARGETS_BIN})
