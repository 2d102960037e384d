/*
 * replay.c - runs a fuzz target over every file in the directories given:
 * the corpus (and any crash reproducers kept in it) as a regression test,
 * built with the project's own compiler and run by ctest.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    unsigned char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    bool ok = buf && fseek(f, 0, SEEK_SET) == 0 && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (ok)
        LLVMFuzzerTestOneInput(buf, (size_t)size);
    else
        fprintf(stderr, "%s: cannot read\n", path);
    free(buf);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    int files = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            perror(argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (run_file(path) < 0)
                return 1;
            files++;
        }
        closedir(d);
    }
    printf("%d inputs replayed\n", files);
    return files > 0 ? 0 : 1;
}
