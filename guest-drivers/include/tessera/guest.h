/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Tessera guest API for C guests: hypercalls, console, VM information and
 * PSCI, as static inline functions.
 *
 * Every number comes from <tessera/hypercall.h>, which is generated from
 * hypercall-abi/abi.toml, the ABI's single source of truth; this header adds
 * only the decoding that the Rust crate `tessera-guest` does for Rust guests
 * (guest-drivers/src/calls.rs, console.rs, psci.rs), with the same rules:
 *
 *  - Tessera calls return a status: TESSERA_SUCCESS (0) or a negative
 *    TESSERA_ERR_*; an unknown negative code reads as TESSERA_ERR_NOT_SUPPORTED.
 *  - PSCI calls return PSCI's own codes (TESSERA_PSCI_*), raw.
 *  - Buffers are passed by address: the guest must run with the MMU off or
 *    identity-mapped (bare-metal programs, an RTOS), so that the address the
 *    program uses is the guest-physical address the hypervisor checks.
 *
 * On 32-bit Arm the trap is hypercall.h's tessera_hvc() (`hvc #0`). On any
 * other target (host unit tests) the program must define tessera_hvc()
 * itself, for instance as a fake hypervisor.
 *
 * Include path: guest-drivers/include and hypercall-abi/include.
 */
#ifndef TESSERA_GUEST_H
#define TESSERA_GUEST_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/hypercall.h>

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(__arm__)
/* Off-target: provided by the program (a fake hypervisor for tests). */
struct tessera_hvc_result tessera_hvc(uint32_t fid, uint32_t a1, uint32_t a2, uint32_t a3);
#endif

/* How often in a row the console may take no bytes (its backlog is full)
 * before tessera_console_write_all() gives up; it yields in between. */
#define TESSERA_CONSOLE_MAX_STALLS 16

/* r0 of a Tessera call as a status: 0, or a known error code. */
static inline int32_t tessera_status(uint32_t r0)
{
    int32_t s = (int32_t)r0;
    switch (s) {
    case TESSERA_SUCCESS:
    case TESSERA_ERR_NOT_SUPPORTED:
    case TESSERA_ERR_INVALID_PARAMETER:
    case TESSERA_ERR_INVALID_ADDRESS:
    case TESSERA_ERR_DENIED:
        return s;
    default:
        /* A code from a newer hypervisor, or a positive junk value. */
        return TESSERA_ERR_NOT_SUPPORTED;
    }
}

/* ---- Discovery ---- */

/* Whether the hypervisor underneath is Tessera (TESSERA_CALL_UID). */
static inline int tessera_is_tessera(void)
{
    struct tessera_hvc_result r = tessera_hvc(TESSERA_FN_CALL_UID, 0, 0, 0);
    return r.r0 == TESSERA_UID_0 && r.r1 == TESSERA_UID_1 && r.r2 == TESSERA_UID_2 &&
           r.r3 == TESSERA_UID_3;
}

/* The ABI version: *major must equal TESSERA_ABI_VERSION_MAJOR. */
static inline int32_t tessera_abi_version(uint32_t *major, uint32_t *minor)
{
    struct tessera_hvc_result r = tessera_hvc(TESSERA_FN_ABI_VERSION, 0, 0, 0);
    int32_t s = tessera_status(r.r0);
    if (s == TESSERA_SUCCESS) {
        *major = r.r1;
        *minor = r.r2;
    }
    return s;
}

/* Whether function `fid` is available to this VM; the feature bitmap
 * (TESSERA_FEATURE_*) in *bits on success. */
static inline int32_t tessera_features(uint32_t fid, uint32_t *bits)
{
    struct tessera_hvc_result r = tessera_hvc(TESSERA_FN_FEATURES, fid, 0, 0);
    int32_t s = tessera_status(r.r0);
    if (s == TESSERA_SUCCESS) {
        *bits = r.r1;
    }
    return s;
}

/* ---- VM information ---- */

struct tessera_vm_info {
    uint32_t vm_id;      /* the calling VM's id */
    uint32_t vcpu_count; /* how many vCPUs the VM has */
    uint32_t vcpu_index; /* the calling vCPU, below vcpu_count */
};

static inline int32_t tessera_vm_info(struct tessera_vm_info *info)
{
    struct tessera_hvc_result r = tessera_hvc(TESSERA_FN_VM_INFO, 0, 0, 0);
    int32_t s = tessera_status(r.r0);
    if (s == TESSERA_SUCCESS) {
        info->vm_id = r.r1;
        info->vcpu_count = r.r2;
        info->vcpu_index = r.r3;
    }
    return s;
}

/* Gives the physical CPU to another runnable vCPU. */
static inline int32_t tessera_vcpu_yield(void)
{
    return tessera_status(tessera_hvc(TESSERA_FN_VCPU_YIELD, 0, 0, 0).r0);
}

/* Stops this VM with an exit status (0 = success). Spins if the call ever
 * returns (not Tessera, or refused): the caller asked never to go on. */
static inline __attribute__((noreturn)) void tessera_vm_shutdown(uint32_t status)
{
    (void)tessera_hvc(TESSERA_FN_VM_SHUTDOWN, status, 0, 0);
    for (;;) {
    }
}

/* ---- Console ---- */

/* One TESSERA_CONSOLE_WRITE of `len` bytes (at most TESSERA_CONSOLE_WRITE_MAX,
 * else TESSERA_ERR_INVALID_PARAMETER without a call); the number of bytes
 * the hypervisor took in *written (which may be NULL). */
static inline int32_t tessera_console_write(const void *buf, size_t len, uint32_t *written)
{
    struct tessera_hvc_result r;
    int32_t s;
    if (len > TESSERA_CONSOLE_WRITE_MAX) {
        return TESSERA_ERR_INVALID_PARAMETER;
    }
    r = tessera_hvc(TESSERA_FN_CONSOLE_WRITE, (uint32_t)(uintptr_t)buf, (uint32_t)len, 0);
    s = tessera_status(r.r0);
    if (s == TESSERA_SUCCESS && written != NULL) {
        *written = r.r1 > len ? (uint32_t)len : r.r1;
    }
    return s;
}

/* All of `len` bytes, in chunks of at most TESSERA_CONSOLE_WRITE_MAX; a
 * partial write is resumed. TESSERA_ERR_DENIED if the console took nothing
 * TESSERA_CONSOLE_MAX_STALLS times in a row (yielding in between). */
static inline int32_t tessera_console_write_all(const void *buf, size_t len)
{
    const char *p = (const char *)buf;
    unsigned stalls = 0;
    while (len > 0) {
        size_t chunk = len < TESSERA_CONSOLE_WRITE_MAX ? len : TESSERA_CONSOLE_WRITE_MAX;
        uint32_t taken = 0;
        int32_t s = tessera_console_write(p, chunk, &taken);
        if (s != TESSERA_SUCCESS) {
            return s;
        }
        if (taken == 0) {
            if (++stalls == TESSERA_CONSOLE_MAX_STALLS) {
                return TESSERA_ERR_DENIED;
            }
            (void)tessera_vcpu_yield();
            continue;
        }
        stalls = 0;
        p += taken;
        len -= taken;
    }
    return TESSERA_SUCCESS;
}

/* A NUL-terminated string (add the '\n' yourself: lines are labelled with
 * the VM's name when they end). */
static inline int32_t tessera_console_puts(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return tessera_console_write_all(s, n);
}

/* ---- PSCI (vCPU power), PSCI's own return codes ---- */

/* Starts vCPU `mpidr` of this VM at guest-physical `entry` (bit 0 set: Thumb)
 * with `context_id` in its r0; the code there gets MMU off and no stack. */
static inline int32_t tessera_psci_cpu_on(uint32_t mpidr, uint32_t entry, uint32_t context_id)
{
    return (int32_t)tessera_hvc(TESSERA_FN_PSCI_CPU_ON, mpidr, entry, context_id).r0;
}

/* Powers the calling vCPU down; returns only on failure. */
static inline int32_t tessera_psci_cpu_off(void)
{
    return (int32_t)tessera_hvc(TESSERA_FN_PSCI_CPU_OFF, 0, 0, 0).r0;
}

/* TESSERA_PSCI_AFFINITY_ON, _OFF or _ON_PENDING for vCPU `mpidr`. */
static inline int32_t tessera_psci_affinity_info(uint32_t mpidr)
{
    return (int32_t)tessera_hvc(TESSERA_FN_PSCI_AFFINITY_INFO, mpidr, 0, 0).r0;
}

/* Stops this VM (PSCI SYSTEM_OFF, reported as exit status 0). */
static inline __attribute__((noreturn)) void tessera_psci_system_off(void)
{
    (void)tessera_hvc(TESSERA_FN_PSCI_SYSTEM_OFF, 0, 0, 0);
    for (;;) {
    }
}

#ifdef __cplusplus
}
#endif

#endif /* TESSERA_GUEST_H */
