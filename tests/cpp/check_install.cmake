# find_package(jitfuse) from a plain `cmake --install`, not only from the wheel: build and install
# jitfuse into a scratch prefix, build the example app against it, run it on a fused model.
#   cmake -DSRC=<repo> -DWORK=<dir> -DPY=<python> -DMODELS=<dir> -P check_install.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
endfunction()

execute_process(
  COMMAND "${PY}" -c "import sys, torch.utils; print(torch.utils.cmake_prefix_path + ':' + sys.prefix, end='')"
  OUTPUT_VARIABLE py_prefixes)
# The environment's list (':'-separated) survives being passed through run()'s arguments.
set(ENV{CMAKE_PREFIX_PATH} "${WORK}/prefix:${py_prefixes}")
run(${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=${PY})
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${CMAKE_COMMAND} --install ${WORK}/build --prefix ${WORK}/prefix)
run(${CMAKE_COMMAND} -S ${SRC}/examples/cpp -B ${WORK}/example -G Ninja -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK}/example)
run(${WORK}/example/jitfuse_run ${MODELS}/fused.pt ${MODELS}/io.pt --expect-fused-first-call --iters 3)
message(STATUS "cmake --install package: example built and ran fused")
