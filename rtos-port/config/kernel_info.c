/* SPDX-License-Identifier: MIT */
/* Facts about the kernel build that applications may print (compiled by
 * freertos-build as its "shim" file, once per kernel build). */
#include "FreeRTOS.h"
#include "task.h"

const char *pcPortKernelVersion(void)
{
    return tskKERNEL_VERSION_NUMBER;
}
