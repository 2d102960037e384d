#include "version.h"

const char *mcpctl_version(void)
{
    return "0.1.0";
}
