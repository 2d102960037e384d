#include "config.h"

const char *mcpd_version(void)
{
    return MCP_VERSION;
}
