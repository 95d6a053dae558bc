# cmake -P script: configure, build and run the consumer app one way (WAY), failing loudly at any step.
file(REMOVE_RECURSE ${BIN})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} ${ARGS} -DSIMMIM_CONSUME=${WAY}
                        -DCMAKE_PREFIX_PATH=${PREFIX}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consume ${WAY}: configure failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consume ${WAY}: build failed (${rc})")
endif()
execute_process(COMMAND ${BIN}/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consume ${WAY}: the consumer program failed (${rc})")
endif()
