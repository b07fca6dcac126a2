/* Fuzz inputs as files: the committed corpus, crash inputs turned tests. */
#ifndef UCOW_TEST_INPUT_FILE_H
#define UCOW_TEST_INPUT_FILE_H

#include <stdbool.h>
#include <stddef.h>

/* Reads a whole file into a malloc'd buffer. Returns 0 or -errno. */
int read_input(const char *path, unsigned char **data, size_t *len);
/* Writes len bytes to path (created or truncated). Returns 0 or -errno. */
int write_input(const char *path, const void *data, size_t len);
/* Whether a file of an input directory is an input (READMEs are not). */
bool is_input_name(const char *name);

#endif
