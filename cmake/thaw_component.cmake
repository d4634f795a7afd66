# thaw_add_component(NAME
#   SOURCES a.cpp b.cpp ...
#   [PUBLIC_DEPS targets...] [PRIVATE_DEPS targets...]
#   [TESTS tests/x/a_test.cpp ...] [TEST_DEPS targets...])
#
# One CMake target per folder (CONVENTIONS.md rule 2): declares the static library
# `thaw_<NAME>` with alias `thaw::<NAME>`, and, when tests are on, one GoogleTest
# binary `thaw_<NAME>_tests` whose cases are registered with CTest.
function(thaw_add_component name)
  cmake_parse_arguments(arg "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS;TESTS;TEST_DEPS" ${ARGN})
  set(target thaw_${name})
  add_library(${target} STATIC ${arg_SOURCES})
  add_library(thaw::${name} ALIAS ${target})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${target} PUBLIC ${arg_PUBLIC_DEPS} PRIVATE ${arg_PRIVATE_DEPS})
  if(THAW_TESTS AND arg_TESTS)
    set(test_target ${target}_tests)
    list(TRANSFORM arg_TESTS PREPEND ${PROJECT_SOURCE_DIR}/)
    add_executable(${test_target} ${arg_TESTS})
    target_link_libraries(${test_target} PRIVATE ${target} ${arg_TEST_DEPS} GTest::gtest GTest::gtest_main)
    target_compile_definitions(${test_target} PRIVATE
      THAW_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    gtest_discover_tests(${test_target} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 600)
  endif()
endfunction()
