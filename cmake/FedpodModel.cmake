# FedpodModel.cmake: build native fedpod model plugins (see model/include/fedpod/model/plugin.h).
#
#   fedpod_add_model(<name> <source>...)
#
# builds <name>.so, a MODULE library that fedpod loads with load_plugin(). It compiles
# against fedpod's public model and common headers, taken from the fedpod source tree
# this file sits in, and links libtorch and the libraries those headers use. It does
# not link fedpod itself: fedpod's symbols (Model, FlatParameters, Hyperparameters)
# stay undefined in the plugin and resolve, when it is loaded, to the host program,
# which exports them (ENABLE_EXPORTS). Linking a second copy of fedpod into the
# plugin would give it its own, possibly different, Model.
#
# Works inside fedpod's build and out of tree. Out of tree:
#
#   cmake_minimum_required(VERSION 3.18)
#   project(my_model CXX)
#   find_package(Torch REQUIRED)      # the libtorch fedpod was built with
#   include(/path/to/fedpod/cmake/FedpodModel.cmake)
#   fedpod_add_model(my_model my_model.cpp)
#
# nlohmann_json, yaml-cpp and spdlog are found here when the caller has not found
# them already; they are the same system packages fedpod links.
#
# Needs CMake 3.17 (CMAKE_CURRENT_FUNCTION_LIST_DIR). Include it in every directory
# that calls fedpod_add_model: imported targets found here are directory-scoped.
if(CMAKE_VERSION VERSION_LESS 3.17)
  message(FATAL_ERROR "FedpodModel.cmake needs CMake 3.17 or newer, this is ${CMAKE_VERSION}")
endif()
include_guard(DIRECTORY)

if(NOT TARGET torch)
  find_package(Torch REQUIRED)
endif()
if(NOT TARGET nlohmann_json::nlohmann_json)
  find_package(nlohmann_json REQUIRED)
endif()
if(NOT TARGET yaml-cpp)
  find_package(yaml-cpp REQUIRED)
endif()
if(NOT TARGET spdlog::spdlog)
  find_package(spdlog REQUIRED)
endif()

function(fedpod_add_model name)
  if(NOT ARGN)
    message(FATAL_ERROR "fedpod_add_model(${name}): no sources given")
  endif()
  get_filename_component(root "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/.." ABSOLUTE)
  add_library(${name} MODULE ${ARGN})
  target_include_directories(${name} PRIVATE "${root}/model/include" "${root}/common/include")
  # torch carries -D_GLIBCXX_USE_CXX11_ABI, which must match fedpod's.
  target_link_libraries(${name} PRIVATE ${TORCH_LIBRARIES}
    nlohmann_json::nlohmann_json yaml-cpp spdlog::spdlog)
  target_compile_features(${name} PRIVATE cxx_std_17)
  # "digits_mlp.so", not "libdigits_mlp.so": a plugin is named, not linked.
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    POSITION_INDEPENDENT_CODE ON)
endfunction()
