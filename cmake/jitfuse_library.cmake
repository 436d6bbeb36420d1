# libjitfuse.so: the passes (graph side) and the fused ops (oneDNN side).
file(GLOB JITFUSE_PASS_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/passes/*.cpp)
file(GLOB JITFUSE_OP_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/ops/*.cpp ${PROJECT_SOURCE_DIR}/ops/onednn/*.cpp)

add_library(jitfuse SHARED ${JITFUSE_PASS_SOURCES} ${JITFUSE_OP_SOURCES})
target_compile_options(jitfuse PRIVATE -Wall -Wno-unused-parameter)
target_include_directories(jitfuse PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
  $<INSTALL_INTERFACE:include>)
# torch's include tree carries newer oneDNN headers: ours must be searched first.
get_target_property(_dnnl_includes DNNL::dnnl INTERFACE_INCLUDE_DIRECTORIES)
target_include_directories(jitfuse BEFORE PRIVATE ${_dnnl_includes})
target_link_libraries(jitfuse PUBLIC ${TORCH_LIBRARIES} PRIVATE DNNL::dnnl OpenMP::OpenMP_CXX)
# Registrations run from static initialisers: an app that calls no jitfuse symbol must still load us.
target_link_options(jitfuse INTERFACE "LINKER:--no-as-needed")

if(JITFUSE_SANITIZE)
  # vptr checks need the RTTI of torch's classes, which libtorch does not export.
  set(_sanitize -fsanitize=address,undefined -fno-sanitize=vptr)
  target_compile_options(jitfuse PUBLIC ${_sanitize} -fno-omit-frame-pointer)
  target_link_options(jitfuse PUBLIC ${_sanitize})
endif()

# Installed layout (also the wheel's jitfuse/ folder): lib/, include/, lib/cmake/jitfuse.
# RPATH: torch's lib folder and the venv's lib (libdnnl) relative to site-packages/jitfuse/lib,
# plus the absolute build-time locations for a plain `cmake --install`.
get_target_property(_dnnl_lib DNNL::dnnl IMPORTED_LOCATION_RELEASE)
get_filename_component(_dnnl_libdir "${_dnnl_lib}" DIRECTORY)
get_filename_component(_torch_libdir "${TORCH_INSTALL_PREFIX}/lib" ABSOLUTE)
set_target_properties(jitfuse PROPERTIES
  INSTALL_RPATH "$ORIGIN/../../torch/lib;$ORIGIN/../../../..;${_torch_libdir};${_dnnl_libdir}")

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS jitfuse EXPORT jitfuseTargets LIBRARY DESTINATION lib)
install(FILES ${PROJECT_SOURCE_DIR}/passes/passes.h DESTINATION include/passes)
install(EXPORT jitfuseTargets NAMESPACE jitfuse:: DESTINATION lib/cmake/jitfuse)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/jitfuseConfig.cmake.in
  ${PROJECT_BINARY_DIR}/jitfuseConfig.cmake INSTALL_DESTINATION lib/cmake/jitfuse)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/jitfuseConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/jitfuseConfig.cmake ${PROJECT_BINARY_DIR}/jitfuseConfigVersion.cmake
  DESTINATION lib/cmake/jitfuse)
