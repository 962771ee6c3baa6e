# fedpod_library(NAME SOURCES... DEPS ...): one library per top-level folder, with
# an alias fedpod::NAME, its public headers under <folder>/include.
function(fedpod_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(fedpod_${name} ${ARG_SOURCES})
  add_library(fedpod::${name} ALIAS fedpod_${name})
  target_include_directories(fedpod_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(fedpod_${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  fedpod_warnings(fedpod_${name})
endfunction()

function(fedpod_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(FEDPOD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# fedpod_test(path/to/name_test.cpp DEPS ... [LABELS ...] [TIMEOUT s]): one GoogleTest
# executable per test file, registered with ctest under its file name.
function(fedpod_test file)
  cmake_parse_arguments(ARG "" "TIMEOUT" "DEPS;LABELS" ${ARGN})
  get_filename_component(name ${file} NAME_WE)
  add_executable(${name} ${file})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} fedpod_testutil GTest::gtest_main)
  fedpod_warnings(${name})
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "FEDPOD_BIN=$<TARGET_FILE:fedpod>;FEDPOD_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()
