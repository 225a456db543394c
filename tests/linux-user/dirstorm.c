// SPDX-License-Identifier: MIT
/*
 * dirstorm: a lock-heavy workload for `cargo xtask bench`. WORKERS
 * processes each create and remove ROUNDS directories of their own in one
 * parent directory, so every operation takes the parent's inode lock
 * (an rwsem) for writing, and the lock's owner is often a vCPU that the
 * hypervisor has descheduled: what the preempted-vCPU hint is for.
 *
 *   dirstorm DIR WORKERS ROUNDS
 *
 * Prints "dirstorm: W workers x R mkdir+rmdir in N ns" (CLOCK_MONOTONIC)
 * and exits 0 if every operation succeeded.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int worker(const char *dir, int id, long rounds)
{
	char path[256];
	long i;

	for (i = 0; i < rounds; i++) {
		snprintf(path, sizeof(path), "%s/w%d-%ld", dir, id, i & 7);
		if (mkdir(path, 0700) || rmdir(path)) {
			fprintf(stderr, "dirstorm: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	long long t0;
	long rounds;
	int workers, i, status, bad = 0;

	if (argc != 4)
		return 2;
	workers = atoi(argv[2]);
	rounds = atol(argv[3]);
	t0 = now_ns();
	for (i = 0; i < workers; i++) {
		pid_t p = fork();

		if (p == 0)
			_exit(worker(argv[1], i, rounds));
		if (p < 0)
			return 1;
	}
	for (i = 0; i < workers; i++) {
		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			bad = 1;
	}
	printf("dirstorm: %d workers x %ld mkdir+rmdir in %lld ns%s\n", workers,
	       rounds, now_ns() - t0, bad ? " (WRONG: an operation failed)" : "");
	return bad;
}
