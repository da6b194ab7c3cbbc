# Every tests/unit/*_spec.lua is one ctest test, run by busted under our own
# host (Debian's /usr/bin/busted runs `env lua`, which can be the lua5.2 that
# lua-busted pulls in). A spec whose
# first line contains "memcheck" is also labelled memcheck; with
# GENEVA_VALGRIND=ON those run under valgrind, and so does every geneva
# process they start (workers, CLI children): other programs (python3, sh,
# pgrep, kubectl, ...) are skipped.
option(GENEVA_VALGRIND "Run the tests labelled memcheck under valgrind" OFF)
find_program(BUSTED busted REQUIRED)
find_program(VALGRIND valgrind)
set(GENEVA_VALGRIND_CMD ${VALGRIND} --quiet --error-exitcode=99 --leak-check=full
  --errors-for-leak-kinds=definite --track-fds=no --trace-children=yes
  "--trace-children-skip=/usr/*,/bin/*,/sbin/*,*python*,*/kubectl")

set(GENEVA_TEST_ENV
  "GENEVA_BIN=$<TARGET_FILE:geneva>"
  "GENEVA_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
  "GENEVA_BUILD_DIR=${CMAKE_BINARY_DIR}"
  "GENEVA_SANITIZE=$<BOOL:${GENEVA_SANITIZE}>"
  "GENEVA_VALGRIND=$<BOOL:${GENEVA_VALGRIND}>"
  "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0"
  "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")

file(GLOB GENEVA_SPECS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/unit/*_spec.lua)
list(SORT GENEVA_SPECS)
foreach(spec ${GENEVA_SPECS})
  get_filename_component(name ${spec} NAME_WE)
  string(REGEX REPLACE "_spec$" "" name ${name})
  file(STRINGS ${spec} first LIMIT_COUNT 1 ENCODING UTF-8)
  set(cmd $<TARGET_FILE:geneva> ${BUSTED} --output=plainTerminal
    --helper=${CMAKE_SOURCE_DIR}/tests/helper.lua ${spec})
  set(labels unit)
  if(first MATCHES "memcheck")
    list(APPEND labels memcheck)
    if(GENEVA_VALGRIND AND VALGRIND)
      set(cmd ${GENEVA_VALGRIND_CMD} ${cmd})
    endif()
  endif()
  file(STRINGS ${spec} header LIMIT_COUNT 10 ENCODING UTF-8)
  if(header MATCHES "storage: s3 only")
    # needs an S3 server for itself and the processes it starts
    set(cmd $<TARGET_FILE:geneva> ${CMAKE_SOURCE_DIR}/tests/support/with_moto.lua ${cmd})
    list(APPEND labels s3)
  endif()
  add_test(NAME ${name} COMMAND ${cmd} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES TIMEOUT 600 LABELS "${labels}"
    ENVIRONMENT "${GENEVA_TEST_ENV}")
  # "storage: dir s3" in the header comment: run again on an s3://
  # database (moto, tests/support/with_moto.lua)
  if(header MATCHES "storage: dir s3")
    add_test(NAME ${name}.s3 COMMAND $<TARGET_FILE:geneva> ${CMAKE_SOURCE_DIR}/tests/support/with_moto.lua
      ${cmd} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${name}.s3 PROPERTIES TIMEOUT 600 LABELS "unit;s3"
      ENVIRONMENT "${GENEVA_TEST_ENV}")
  endif()
endforeach()

# Shell/C level tests under tests/integration: each *.sh is one test.
file(GLOB GENEVA_SHELL_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/integration/*.sh)
list(SORT GENEVA_SHELL_TESTS)
foreach(t ${GENEVA_SHELL_TESTS})
  get_filename_component(name ${t} NAME_WE)
  add_test(NAME integration.${name} COMMAND bash ${t} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(integration.${name} PROPERTIES TIMEOUT 600 LABELS integration
    ENVIRONMENT "${GENEVA_TEST_ENV}")
endforeach()

# The embedding API in C, through libgeneva.so (tests/unit/host_api.c).
add_executable(host_api_test ${CMAKE_SOURCE_DIR}/tests/unit/host_api.c)
target_compile_options(host_api_test PRIVATE ${GENEVA_WARNINGS})
target_link_libraries(host_api_test PRIVATE geneva_shared ${CMAKE_DL_LIBS})
set(cmd $<TARGET_FILE:host_api_test>)
if(GENEVA_VALGRIND AND VALGRIND)
  set(cmd ${GENEVA_VALGRIND_CMD} ${cmd})
endif()
add_test(NAME host_api COMMAND ${cmd} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(host_api PROPERTIES TIMEOUT 600 LABELS "unit;memcheck"
  ENVIRONMENT "${GENEVA_TEST_ENV}")

# The fault-injection harness (tests/reliability/run), two runs a loop: the
# README gives the full run's figures and command.
add_test(NAME reliability COMMAND bash ${CMAKE_SOURCE_DIR}/tests/reliability/run --n 2 $<TARGET_FILE:geneva>
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(reliability PROPERTIES TIMEOUT 900 LABELS reliability
  ENVIRONMENT "${GENEVA_TEST_ENV}")
# and one run a loop with the databases in a bucket on moto
add_test(NAME reliability.s3 COMMAND bash ${CMAKE_SOURCE_DIR}/tests/reliability/run --store s3 --n 1
  $<TARGET_FILE:geneva> WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(reliability.s3 PROPERTIES TIMEOUT 900 LABELS "reliability;s3"
  ENVIRONMENT "${GENEVA_TEST_ENV}")
