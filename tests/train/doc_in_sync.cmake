# cmake -P: fails unless the markdown file DOC contains the file SNIPPET verbatim (inside a code block).
file(READ ${DOC} doc)
file(READ ${SNIPPET} snippet)
string(FIND "${doc}" "${snippet}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${DOC} does not show ${SNIPPET} as it is: paste the file into its ```cpp block")
endif()
