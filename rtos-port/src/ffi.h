/* What bindgen turns into Rust (rtos-port/build.rs): the FreeRTOS API the
 * demo uses and the port's own API. */
#include "FreeRTOS.h"
#include "task.h"
#include "queue.h"
#include "semphr.h"
#include "tessera_port.h"

const char *pcPortKernelVersion(void);
