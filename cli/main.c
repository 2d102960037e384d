/*
 * mcpctl - the command-line client of mcpd. Everything but process setup
 * lives in mcpctl_core (see cli.h).
 */
#include "cli.h"
#include "errors.h"

#include <curl/curl.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "mcpctl: cannot initialise the network library\n");
        return CLI_EXIT_ERROR;
    }
    int rc = cli_main(argc, argv, stdin, stdout, stderr);
    curl_global_cleanup();
    return rc;
}
