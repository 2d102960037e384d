const char *mcpctl_version(void);
const char *mcpctl_version(void)
{
    return "0.1.0";
}
