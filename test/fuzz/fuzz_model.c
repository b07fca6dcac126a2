/*
 * libFuzzer harness: the fuzz input is decoded as the model's choices (see
 * ../choices.h), so every input is a valid sequence of model operations,
 * checked as in make check. A failed check aborts: libFuzzer saves the input.
 */
#include <stddef.h>
#include <stdint.h>

#include "../model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	model_run_input(data, size,
			"build/test/fuzz/ucow_fuzz FILE, FILE being the input "
			"libFuzzer saved (make fuzz: test/fuzz/regressions/)");
	return 0;
}
