# cmake -DSCDOC=scdoc -DIN=page.scd -DOUT=page -P scdoc.cmake
# Runs scdoc (which reads stdin and writes stdout); a page it refuses is
# reported with its reason and leaves no output behind.
execute_process(COMMAND ${SCDOC} INPUT_FILE ${IN} OUTPUT_VARIABLE roff
                ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "scdoc cannot build ${IN}: ${err}")
endif()
# scdoc turns hyphenation off before .TH, whose macro turns it back on, so
# names like MCPD_HEARTBEAT_TIMEOUT got split at line ends: off again after.
string(REGEX REPLACE "(\n\\.TH [^\n]*\n)" "\\1.nh\n" roff "${roff}")
file(WRITE ${OUT}.tmp "${roff}")
file(RENAME ${OUT}.tmp ${OUT})
