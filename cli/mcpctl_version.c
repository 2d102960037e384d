#include "version.h"

const char *mcpctl_version(void)
{
    return MCP_VERSION;
}
