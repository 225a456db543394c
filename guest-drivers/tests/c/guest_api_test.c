/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Host test of <tessera/guest.h>: the wrappers run against a fake
 * hypervisor (this file's tessera_hvc) that records each call and answers
 * as the test says; every decoding rule the header documents is checked.
 * Prints one line per failed check and exits non-zero if any failed.
 */
#include <stdio.h>
#include <string.h>
#include <tessera/guest.h>

static struct {
    uint32_t fid, a1, a2, a3;
} calls[64];
static unsigned ncalls;
static struct tessera_hvc_result next[64];
static unsigned nnext;
static unsigned failures;

/* CONSOLE_WRITE takes at most `console_room` bytes per call. */
static uint32_t console_room = 0xffffffffu;
static char console[8192];
static size_t console_len;

struct tessera_hvc_result tessera_hvc(uint32_t fid, uint32_t a1, uint32_t a2, uint32_t a3)
{
    struct tessera_hvc_result r = {0, 0, 0, 0};
    if (ncalls < 64) {
        calls[ncalls].fid = fid;
        calls[ncalls].a1 = a1;
        calls[ncalls].a2 = a2;
        calls[ncalls].a3 = a3;
    }
    ncalls++;
    if (fid == TESSERA_FN_CONSOLE_WRITE && nnext == 0) {
        /* a1 is a guest address: on the host, the low 32 bits of a pointer
         * into this program; the test passes buffers it can find again. */
        uint32_t n = a2 < console_room ? a2 : console_room;
        extern const char *console_source;
        memcpy(console + console_len, console_source + (a1 - (uint32_t)(uintptr_t)console_source), n);
        console_len += n;
        r.r1 = n;
        return r;
    }
    if (nnext > 0) {
        r = next[0];
        memmove(next, next + 1, (nnext - 1) * sizeof next[0]);
        nnext--;
    }
    return r;
}

const char *console_source;

static void answer(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3)
{
    struct tessera_hvc_result r = {r0, r1, r2, r3};
    next[nnext++] = r;
}

static void reset(void)
{
    ncalls = 0;
    nnext = 0;
    console_len = 0;
    console_room = 0xffffffffu;
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("check failed at line %d: %s\n", __LINE__, #cond);          \
            failures++;                                                        \
        }                                                                      \
    } while (0)

int main(void)
{
    /* VM info: three results decoded, the call made once. */
    struct tessera_vm_info info = {0, 0, 0};
    reset();
    answer(0, 7, 2, 1);
    CHECK(tessera_vm_info(&info) == TESSERA_SUCCESS);
    CHECK(info.vm_id == 7 && info.vcpu_count == 2 && info.vcpu_index == 1);
    CHECK(ncalls == 1 && calls[0].fid == TESSERA_FN_VM_INFO);

    /* An error leaves the output alone; unknown codes read as NOT_SUPPORTED. */
    reset();
    answer((uint32_t)TESSERA_ERR_NOT_SUPPORTED, 9, 9, 9);
    CHECK(tessera_vm_info(&info) == TESSERA_ERR_NOT_SUPPORTED && info.vm_id == 7);
    reset();
    answer((uint32_t)-77, 0, 0, 0);
    CHECK(tessera_vcpu_yield() == TESSERA_ERR_NOT_SUPPORTED);
    reset();
    answer(5, 0, 0, 0);
    CHECK(tessera_vcpu_yield() == TESSERA_ERR_NOT_SUPPORTED);

    /* ABI version and features. */
    uint32_t major = 0, minor = 0, bits = 0;
    reset();
    answer(0, TESSERA_ABI_VERSION_MAJOR, 3, 0);
    CHECK(tessera_abi_version(&major, &minor) == TESSERA_SUCCESS && major == TESSERA_ABI_VERSION_MAJOR && minor == 3);
    reset();
    answer(0, TESSERA_FEATURE_CONSOLE | TESSERA_FEATURE_SHUTDOWN, 0, 0);
    CHECK(tessera_features(TESSERA_FN_CONSOLE_WRITE, &bits) == TESSERA_SUCCESS);
    CHECK(bits == (TESSERA_FEATURE_CONSOLE | TESSERA_FEATURE_SHUTDOWN) && calls[0].a1 == TESSERA_FN_CONSOLE_WRITE);

    /* Tessera is recognised by its UID, and only by it. */
    reset();
    answer(TESSERA_UID_0, TESSERA_UID_1, TESSERA_UID_2, TESSERA_UID_3);
    CHECK(tessera_is_tessera());
    reset();
    answer(TESSERA_UID_0, TESSERA_UID_1, TESSERA_UID_2, 0);
    CHECK(!tessera_is_tessera());

    /* Console: one call up to the limit, refused above it without a call. */
    static char text[3000];
    for (size_t i = 0; i < sizeof text; i++) {
        text[i] = (char)('a' + i % 26);
    }
    console_source = text;
    uint32_t written = 0;
    reset();
    CHECK(tessera_console_write(text, TESSERA_CONSOLE_WRITE_MAX, &written) == TESSERA_SUCCESS);
    CHECK(written == TESSERA_CONSOLE_WRITE_MAX && ncalls == 1);
    reset();
    CHECK(tessera_console_write(text, TESSERA_CONSOLE_WRITE_MAX + 1, &written) == TESSERA_ERR_INVALID_PARAMETER);
    CHECK(ncalls == 0);

    /* write_all: chunks of at most the limit, in order, all bytes. */
    reset();
    CHECK(tessera_console_write_all(text, sizeof text) == TESSERA_SUCCESS);
    CHECK(ncalls == 3 && calls[0].a2 == 1024 && calls[1].a2 == 1024 && calls[2].a2 == 952);
    CHECK(console_len == sizeof text && memcmp(console, text, sizeof text) == 0);

    /* Partial writes are resumed where they stopped. */
    reset();
    console_room = 100;
    CHECK(tessera_console_write_all(text, 250) == TESSERA_SUCCESS);
    CHECK(ncalls == 3 && console_len == 250 && memcmp(console, text, 250) == 0);

    /* A console that takes nothing: yield between tries, give up after the limit. */
    reset();
    console_room = 0;
    CHECK(tessera_console_write_all(text, 10) == TESSERA_ERR_DENIED);
    unsigned writes = 0, yields = 0;
    for (unsigned i = 0; i < ncalls && i < 64; i++) {
        writes += calls[i].fid == TESSERA_FN_CONSOLE_WRITE;
        yields += calls[i].fid == TESSERA_FN_VCPU_YIELD;
    }
    CHECK(writes == TESSERA_CONSOLE_MAX_STALLS && yields == TESSERA_CONSOLE_MAX_STALLS - 1);

    /* puts: the string without its NUL. */
    static const char hello[] = "hello\n";
    console_source = hello;
    reset();
    CHECK(tessera_console_puts(hello) == TESSERA_SUCCESS && console_len == 6 && memcmp(console, hello, 6) == 0);

    /* PSCI: raw codes, arguments in order. */
    reset();
    answer((uint32_t)TESSERA_PSCI_ALREADY_ON, 0, 0, 0);
    CHECK(tessera_psci_cpu_on(1, 0x40001000u, 5) == TESSERA_PSCI_ALREADY_ON);
    CHECK(calls[0].fid == TESSERA_FN_PSCI_CPU_ON && calls[0].a1 == 1 && calls[0].a2 == 0x40001000u && calls[0].a3 == 5);
    reset();
    answer(TESSERA_PSCI_AFFINITY_OFF, 0, 0, 0);
    CHECK(tessera_psci_affinity_info(1) == TESSERA_PSCI_AFFINITY_OFF);

    if (failures == 0) {
        printf("guest.h: all checks passed\n");
    }
    return failures == 0 ? 0 : 1;
}
