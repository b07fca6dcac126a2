/*
 * The fuzz harness without libFuzzer: `ucow_fuzz FILE...` runs the model on
 * each input file, through the harness's own entry point. This main() is
 * weak: linked with -fsanitize=fuzzer (make fuzz), libFuzzer's main()
 * replaces it; built by make check with any compiler, it is the main.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/input_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((weak)) int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE...   (replays fuzz inputs)\n",
			argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		unsigned char *data;
		size_t len;
		int err = read_input(argv[i], &data, &len);
		if (err) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(-err));
			return 1;
		}
		LLVMFuzzerTestOneInput(data, len);
		free(data);
		printf("%s: %zu bytes: ok\n", argv[i], len);
	}
	return 0;
}
