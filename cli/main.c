#include <stdio.h>

int main(void)
{
    fprintf(stderr, "mcpctl: not built yet\n");
    return 1;
}
