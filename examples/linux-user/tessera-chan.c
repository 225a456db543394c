// SPDX-License-Identifier: MIT
/*
 * tessera-chan: a Linux program that talks through a Tessera channel.
 *
 * It uses only what the channel driver (linux-patches/, /dev/tessera/NAME)
 * gives every program: mmap for the shared memory, read to wait for the
 * doorbell, write to ring it. MIT-licensed, so programs that are not GPL
 * can start from it.
 *
 *   tessera-chan info NAME                 the channel's size and id
 *   tessera-chan a NAME [BYTES [ROUNDS]]   one side of the exchange test
 *   tessera-chan b NAME                    the other side, for one exchange
 *   tessera-chan quit NAME                 tell the other side to stop
 *
 * The exchange: A sends BYTES (default 1 MiB) of pseudo-random data to B,
 * B sends as many back, each receiver checks every byte and the sender's
 * checksum; then A sends ROUNDS (default 1000) pings that B answers, and
 * an end mark. B is what the FreeRTOS demo's link task does too, so
 * `tessera-chan a` can talk to either; both sides carry on from the
 * message numbers the memory holds, so A can be run again and again.
 *
 * The memory holds two mailboxes, A to B in the first half and B to A in
 * the second. A sender fills its mailbox, publishes the message number in
 * `seq` and rings; the receiver copies the message out, publishes the
 * number in `ack` and rings. Each word has one writer, and a waiter checks
 * its condition before it blocks on the doorbell, so no wake-up is lost.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum kind { DATA = 1, END = 2, PING = 3, PONG = 4, QUIT = 5 };

struct mailbox {
	volatile uint32_t seq;	/* sender: number of the message in it */
	volatile uint32_t ack;	/* receiver: number of the last one taken */
	volatile uint32_t kind;
	volatile uint32_t len;
	volatile uint32_t sum;	/* END: checksum of everything sent */
	uint32_t reserved[3];
	unsigned char data[];
};

struct side {
	int fd;
	struct mailbox *out, *in;
	uint32_t out_seq, in_seq;
	size_t max;		/* bytes a message can carry */
};

static void die(const char *what)
{
	fprintf(stderr, "tessera-chan: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void ring(struct side *s)
{
	uint32_t one = 1;

	if (write(s->fd, &one, sizeof(one)) != sizeof(one))
		die("ringing the doorbell");
}

static void wait_doorbell(struct side *s)
{
	uint32_t n;

	if (read(s->fd, &n, sizeof(n)) != sizeof(n))
		die("waiting for the doorbell");
}

static void send_msg(struct side *s, uint32_t kind, const void *data,
		     uint32_t len, uint32_t sum)
{
	uint32_t n = ++s->out_seq;

	memcpy(s->out->data, data, len);
	s->out->kind = kind;
	s->out->len = len;
	s->out->sum = sum;
	__sync_synchronize();	/* the message before its number */
	s->out->seq = n;
	__sync_synchronize();
	ring(s);
	while (s->out->ack != n)
		wait_doorbell(s);
}

/* Takes the next message into buf (at least s->max bytes); its kind. */
static uint32_t recv_msg(struct side *s, void *buf, uint32_t *len,
			 uint32_t *sum)
{
	uint32_t n = ++s->in_seq, kind;

	while (s->in->seq != n)
		wait_doorbell(s);
	__sync_synchronize();	/* its number before the message */
	kind = s->in->kind;
	*len = s->in->len;
	if (*len > s->max)
		*len = s->max;
	*sum = s->in->sum;
	memcpy(buf, s->in->data, *len);
	__sync_synchronize();	/* done with it before saying so */
	s->in->ack = n;
	__sync_synchronize();
	ring(s);
	return kind;
}

static uint32_t fnv1a(uint32_t h, const unsigned char *p, size_t n)
{
	while (n--)
		h = (h ^ *p++) * 16777619u;
	return h;
}

static uint32_t xorshift(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static void fill(unsigned char *p, size_t n, uint32_t *x)
{
	while (n--)
		*p++ = (unsigned char)xorshift(x);
}

static long read_number(const char *name, const char *attr)
{
	char path[256], text[32];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/class/tessera-channel/%s/%s", name,
		 attr);
	f = fopen(path, "r");
	if (!f || !fgets(text, sizeof(text), f))
		die(path);
	fclose(f);
	return strtol(text, NULL, 10);
}

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void send_stream(struct side *s, size_t bytes, uint32_t seed)
{
	unsigned char *buf = malloc(s->max);
	uint32_t sum = 2166136261u, x = seed;
	size_t left = bytes;

	while (left) {
		size_t n = left < s->max ? left : s->max;

		fill(buf, n, &x);
		sum = fnv1a(sum, buf, n);
		send_msg(s, DATA, buf, n, 0);
		left -= n;
	}
	send_msg(s, END, NULL, 0, sum);
	printf("tessera-chan: sent %zu bytes, fnv 0x%08x\n", bytes, sum);
	free(buf);
}

/*
 * Receives one stream into *bytes_out: 0 if every byte and the checksum are
 * right, 1 if not, -1 if the first message was QUIT instead.
 */
static int recv_stream(struct side *s, uint32_t seed, size_t *bytes_out)
{
	unsigned char *buf = malloc(s->max), *want = malloc(s->max);
	uint32_t sum = 2166136261u, x = seed, len, sent_sum, kind;
	size_t bytes = 0, wrong = 0;

	while ((kind = recv_msg(s, buf, &len, &sent_sum)) == DATA) {
		fill(want, len, &x);
		if (memcmp(buf, want, len))
			wrong++;
		sum = fnv1a(sum, buf, len);
		bytes += len;
	}
	free(buf);
	free(want);
	*bytes_out = bytes;
	if (kind == QUIT && !bytes)
		return -1;
	if (kind != END || wrong || sum != sent_sum) {
		printf("tessera-chan: WRONG: received %zu bytes, fnv 0x%08x, the sender's 0x%08x, %zu wrong messages\n",
		       bytes, sum, sent_sum, wrong);
		return 1;
	}
	printf("tessera-chan: received %zu bytes, fnv 0x%08x, as sent\n",
	       bytes, sum);
	return 0;
}

static int pinger(struct side *s, long rounds)
{
	uint32_t buf[16], len, sum, kind, i;
	double t0 = now_us();

	for (i = 0; (long)i < rounds; i++) {
		send_msg(s, PING, &i, sizeof(i), 0);
		kind = recv_msg(s, buf, &len, &sum);
		if (kind != PONG || len != sizeof(i) || buf[0] != i) {
			printf("tessera-chan: WRONG: round trip %u came back as kind %u, %u bytes, %u\n",
			       i, kind, len, buf[0]);
			return 1;
		}
	}
	send_msg(s, END, NULL, 0, 0);
	printf("tessera-chan: %ld round trips, every reply right, %.0f ns each\n",
	       rounds, (now_us() - t0) * 1000 / (rounds ? rounds : 1));
	return 0;
}

/* Answers pings until the end mark. */
static int ponger(struct side *s)
{
	uint32_t buf[16], len, sum, kind;
	long rounds = 0;

	while ((kind = recv_msg(s, buf, &len, &sum)) == PING) {
		send_msg(s, PONG, buf, len, 0);
		rounds++;
	}
	if (kind != END) {
		printf("tessera-chan: WRONG: kind %u where a ping was due\n",
		       kind);
		return 1;
	}
	printf("tessera-chan: answered %ld round trips\n", rounds);
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: tessera-chan info NAME\n"
		"       tessera-chan a NAME [BYTES [ROUNDS]]\n"
		"       tessera-chan b NAME\n"
		"       tessera-chan quit NAME\n");
	return 2;
}

int main(int argc, char **argv)
{
	char dev[256];
	struct side s;
	long size, id, bytes = 1 << 20, rounds = 1000;
	void *mem;
	int a, bad = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3)
		return usage();
	size = read_number(argv[2], "size");
	id = read_number(argv[2], "id");
	if (!strcmp(argv[1], "info")) {
		printf("tessera-chan: channel %s: %ld bytes, id %ld\n", argv[2],
		       size, id);
		return 0;
	}
	if (strcmp(argv[1], "a") && strcmp(argv[1], "b") &&
	    strcmp(argv[1], "quit"))
		return usage();
	a = strcmp(argv[1], "b") != 0;	/* quit speaks from side A */
	if (argc > 3)
		bytes = strtol(argv[3], NULL, 0);
	if (argc > 4)
		rounds = strtol(argv[4], NULL, 0);
	if (size < 8192 || bytes < 0 || rounds < 0)
		return usage();

	snprintf(dev, sizeof(dev), "/dev/tessera/%s", argv[2]);
	s.fd = open(dev, O_RDWR);
	if (s.fd < 0)
		die(dev);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	s.out = (struct mailbox *)((char *)mem + (a ? 0 : size / 2));
	s.in = (struct mailbox *)((char *)mem + (a ? size / 2 : 0));
	/* Carry on where the last user of the channel stopped. */
	s.out_seq = s.out->seq;
	s.in_seq = s.in->ack;
	s.max = size / 2 - sizeof(struct mailbox);
	printf("tessera-chan: channel %s: %ld bytes, id %ld, side %s\n",
	       argv[2], size, id, a ? "a" : "b");

	if (!strcmp(argv[1], "quit")) {
		send_msg(&s, QUIT, NULL, 0, 0);
		printf("tessera-chan: told the other side to stop\n");
	} else if (a) {
		size_t back;

		send_stream(&s, bytes, 1);
		bad |= recv_stream(&s, 2, &back);
		bad |= pinger(&s, rounds);
	} else {
		size_t got;

		int r = recv_stream(&s, 1, &got);

		if (r < 0) {
			printf("tessera-chan: told to stop\n");
			return 0;
		}
		bad |= r;
		send_stream(&s, got, 2);
		bad |= ponger(&s);
	}
	return bad;
}
