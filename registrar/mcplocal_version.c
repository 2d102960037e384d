const char *mcplocal_version(void);
const char *mcplocal_version(void)
{
    return "0.1.0";
}
