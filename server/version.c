const char *mcpd_version(void);
const char *mcpd_version(void)
{
    return "0.1.0";
}
