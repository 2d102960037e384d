const char *mcplocal_version(void);
const char *mcplocal_version(void)
{
    return MCP_VERSION;
}
