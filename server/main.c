#include <stdio.h>

int main(void)
{
    fprintf(stderr, "mcpd: not built yet\n");
    return 1;
}
