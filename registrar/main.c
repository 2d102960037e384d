#include <stdio.h>

int main(void)
{
    fprintf(stderr, "mcplocal: not built yet\n");
    return 1;
}
