# Runs at install time, from cmake_install.cmake (`cmake --install`,
# `make install`, CPack): writes the service units and /etc/default/mcpd.
#
# The units name mcpd, mcplocal and the settings file by absolute path, and
# the prefix is known only now: `cmake --install --prefix DIR` and CPack
# (which installs with the prefix /usr under a staging DESTDIR) choose it
# after configuration. file(INSTALL) adds DESTDIR and records the files in
# install_manifest.txt, as install(FILES) does.
#
# Set by packaging/CMakeLists.txt: MCP_SOURCE_DIR, MCP_WORK_DIR, and the
# GNUInstallDirs and unit directories, as configured (relative or absolute).

# A configured directory under the install-time prefix.
function(mcp_absolute out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

mcp_absolute(sbindir "${MCP_SBINDIR}")
mcp_absolute(bindir "${MCP_BINDIR}")
mcp_absolute(system_unit_dir "${MCP_SYSTEM_UNIT_DIR}")
mcp_absolute(user_unit_dir "${MCP_USER_UNIT_DIR}")
# GNUInstallDirs' rule: with the prefix /usr, the relative etc is /etc.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr" AND MCP_SYSCONFDIR STREQUAL "etc")
  set(sysconfdir /etc)
else()
  mcp_absolute(sysconfdir "${MCP_SYSCONFDIR}")
endif()

# One work directory per destination: installs may run side by side (tests).
string(MD5 dest "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(work "${MCP_WORK_DIR}/${dest}")

set(MCPD_PROGRAM "${sbindir}/mcpd")
set(MCPLOCAL_PROGRAM "${bindir}/mcplocal")
set(MCPD_DEFAULTS_FILE "${sysconfdir}/default/mcpd")
configure_file("${MCP_SOURCE_DIR}/mcpd.service.in" "${work}/mcpd.service" @ONLY)
configure_file("${MCP_SOURCE_DIR}/mcplocal.service.in" "${work}/mcplocal.service" @ONLY)
file(INSTALL DESTINATION "${system_unit_dir}" TYPE FILE FILES "${work}/mcpd.service")
file(INSTALL DESTINATION "${user_unit_dir}" TYPE FILE FILES "${work}/mcplocal.service")
file(REMOVE_RECURSE "${work}")

# The settings file is the operator's once installed: an existing one is kept.
if(EXISTS "$ENV{DESTDIR}${MCPD_DEFAULTS_FILE}")
  message(STATUS "Keeping: $ENV{DESTDIR}${MCPD_DEFAULTS_FILE}")
else()
  file(INSTALL DESTINATION "${sysconfdir}/default" TYPE FILE
       FILES "${MCP_SOURCE_DIR}/mcpd.default" RENAME mcpd)
endif()
