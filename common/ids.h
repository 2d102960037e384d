/*
 * ids.h - random identifiers from the kernel's CSPRNG.
 */
#ifndef MCP_IDS_H
#define MCP_IDS_H

#include <stddef.h>

/* Fills out with 2*nbytes lowercase hex digits and a NUL (out holds
 * 2*nbytes+1). Returns 0, or -1 when the kernel gave no randomness. */
int id_random_hex(char *out, size_t nbytes);

/* Fills out (33 bytes) with 32 hex digits that are unique within this
 * process and hard to guess across processes: a counter passed through a
 * bijective mixer keyed once from the kernel's CSPRNG. No system call after
 * the first; for per-request ids on hot paths. Thread-safe. */
void id_sequence_hex(char out[33]);

/* Fills buf with n random bytes. Returns 0 or -1. */
int id_random_bytes(void *buf, size_t n);

#endif
