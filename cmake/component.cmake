# tcpha_component(NAME DEPS...): a static library from every .cpp in the current
# directory src/<dir>, linking exactly DEPS (other components and packages).
#
# Dependencies are enforced, not just documented: no directory above src/<dir> is on
# any include path. Each component gets an include root of its own,
# ${CMAKE_BINARY_DIR}/include/<dir>, holding one link <dir> -> src/<dir>, which it
# passes on (PUBLIC) to whoever links it. So `#include "fe/worker.hpp"` compiles only
# in code that links tcpha_fe directly or through a declared dependency; an undeclared
# include is a "No such file" error naming the header.
function(tcpha_component name)
  get_filename_component(dir ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  set(root ${CMAKE_BINARY_DIR}/include/${dir})
  file(MAKE_DIRECTORY ${root})
  if(NOT EXISTS ${root}/${dir})
    file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${root}/${dir} SYMBOLIC)
  endif()
  file(GLOB srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  if(srcs)
    add_library(${name} STATIC ${srcs})
    target_include_directories(${name} PUBLIC ${root})
    target_link_libraries(${name} PUBLIC ${ARGN})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${root})
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()

# tcpha_link_included(TARGET SOURCE): links TARGET with every component whose headers
# SOURCE includes (`#include "<dir>/..."` -> tcpha_<dir>), directly or through a
# helper header next to it (`#include "fixture.hpp"`), and nothing else. Tests and
# microbenchmarks use it instead of a catch-all library: what a test compiles against
# is what it tests. Editing SOURCE re-runs the scan.
function(tcpha_link_included target source)
  get_filename_component(here ${source} DIRECTORY)
  file(STRINGS ${source} lines REGEX "^#include \"[a-z_]+/")
  file(STRINGS ${source} locals REGEX "^#include \"[a-z_]+\\.hpp\"")
  foreach(local ${locals})
    string(REGEX REPLACE "^#include \"([a-z_]+\\.hpp)\".*" "\\1" header "${local}")
    if(EXISTS ${here}/${header})
      file(STRINGS ${here}/${header} more REGEX "^#include \"[a-z_]+/")
      list(APPEND lines ${more})
      set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${here}/${header})
    endif()
  endforeach()
  set(deps)
  foreach(line ${lines})
    string(REGEX REPLACE "^#include \"([a-z_]+)/.*" "\\1" dir "${line}")
    if(NOT TARGET tcpha_${dir})
      message(FATAL_ERROR "${source}: includes \"${dir}/...\" but there is no component tcpha_${dir}")
    endif()
    list(APPEND deps tcpha_${dir})
  endforeach()
  list(REMOVE_DUPLICATES deps)
  target_link_libraries(${target} PRIVATE ${deps})
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${source})
endfunction()
