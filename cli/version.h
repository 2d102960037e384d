/*
 * version.h - mcpctl's version string.
 */
#ifndef MCPCTL_VERSION_H
#define MCPCTL_VERSION_H

/* Returns the version, e.g. "0.1.0" (static). */
const char *mcpctl_version(void);

#endif
