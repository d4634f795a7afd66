# Every dependency comes from Debian's packages (scripts/setup.sh installs them).
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(CapnProto REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
pkg_check_modules(URING REQUIRED IMPORTED_TARGET liburing)
# Boost: Asio and Beast (header-only) for the HTTP edge (transport/).
find_package(Boost 1.74 REQUIRED)
# UCX: the data plane between nodes (transport/). ucp needs ucs on the link line as well.
find_package(ucx REQUIRED)
# CAF 0.17 ships no CMake package: wrap its libraries as imported targets. Only actors/, apps/,
# examples/ and the CAF part of transport/ link them (ARCHITECTURE.md section 1).
find_path(CAF_INCLUDE_DIR caf/actor_system.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
add_library(caf::core SHARED IMPORTED)
set_target_properties(caf::core PROPERTIES IMPORTED_LOCATION ${CAF_CORE_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR} INTERFACE_LINK_LIBRARIES Threads::Threads)
add_library(caf::io SHARED IMPORTED)
set_target_properties(caf::io PROPERTIES IMPORTED_LOCATION ${CAF_IO_LIBRARY}
  INTERFACE_LINK_LIBRARIES caf::core)
# CAF's OpenSSL module: TLS on the cluster's control connections (actors/cluster*). OpenSSL
# itself also makes the cluster's certificates (thaw cluster init).
find_package(OpenSSL REQUIRED)
find_library(CAF_OPENSSL_LIBRARY caf_openssl REQUIRED)
add_library(caf::openssl SHARED IMPORTED)
set_target_properties(caf::openssl PROPERTIES IMPORTED_LOCATION ${CAF_OPENSSL_LIBRARY}
  INTERFACE_LINK_LIBRARIES "caf::io;OpenSSL::SSL;OpenSSL::Crypto")
if(THAW_TESTS)
  find_package(GTest REQUIRED)
endif()
