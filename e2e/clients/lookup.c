/*
 * lookup: the e2e suite's "application". It resolves names the way real programs do,
 * getaddrinfo(AF_UNSPEC) — so the C library sends the A and AAAA queries of one lookup in
 * parallel from one UDP socket, which is the traffic pattern behind the 5-second problem —
 * and records how long each lookup took and what it returned.
 *
 * Built twice by the suite: with gcc against glibc, and with `musl-gcc -static` against musl,
 * because the two resolvers retry, time out and parse resolv.conf differently.
 *
 * usage: lookup [-t threads] [-n lookups] [-d duration_ms] [-r rate] name...
 *   -t  worker threads doing lookups concurrently (default 8, 1..512)
 *   -n  total lookups, names taken round-robin (default: one per name)
 *   -d  instead of -n: keep looking up until this many milliseconds have passed
 *   -r  start lookup i no earlier than i/rate seconds after the start (lookups per second,
 *       1..1000000; default 0 = as fast as the threads go). Pacing gives two resolvers the
 *       same offered load, so their latencies compare; a slow lookup holds only its thread.
 *
 * Output, one line per lookup, tab-separated, written when the lookup returns:
 *   seq  name  start_unix_ns  end_unix_ns  status  addresses
 * status is "ok" or the EAI_* name; addresses is a comma-separated sorted list ("-" if none).
 * Wall-clock (CLOCK_REALTIME) stamps let the harness line lookups up with events it caused,
 * such as killing the stub; latency is end - start.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Above the largest answer the suite serves (40 A records) and musl's own cap (MAXADDRS, 48), so
 * a short list is the library's doing, never the client's. A line holds them all as IPv6. */
#define MAX_ADDRS 64
#define LINE_MAX_LEN 4096

static char **names;
static int nnames;
static long total = -1;       /* -n; -1 = duration mode or default */
static long duration_ms = -1; /* -d */
static long rate;             /* -r, lookups per second; 0 = unpaced */
static int64_t start_ns;      /* CLOCK_MONOTONIC at start */
static int64_t deadline_ns;
static long next_seq;
static pthread_mutex_t seq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ns(clockid_t clk) {
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* claim returns the next lookup's sequence number, or -1 when the run is over. */
static long claim(void) {
	long seq = -1;
	pthread_mutex_lock(&seq_mu);
	if (duration_ms >= 0) {
		if (now_ns(CLOCK_MONOTONIC) < deadline_ns) seq = next_seq++;
	} else if (next_seq < total) {
		seq = next_seq++;
	}
	pthread_mutex_unlock(&seq_mu);
	return seq;
}

static const char *eai_name(int rc) {
	switch (rc) {
	case EAI_AGAIN: return "EAI_AGAIN";
	case EAI_FAIL: return "EAI_FAIL";
	case EAI_NONAME: return "EAI_NONAME";
	case EAI_MEMORY: return "EAI_MEMORY";
	case EAI_SYSTEM: return "EAI_SYSTEM";
#ifdef EAI_NODATA
	case EAI_NODATA: return "EAI_NODATA";
#endif
	case EAI_FAMILY: return "EAI_FAMILY";
	case EAI_SERVICE: return "EAI_SERVICE";
	default: return "EAI_OTHER";
	}
}

static int cmpstr(const void *a, const void *b) {
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void *worker(void *arg) {
	(void)arg;
	char line[LINE_MAX_LEN];
	char bufs[MAX_ADDRS][INET6_ADDRSTRLEN];
	char *addrs[MAX_ADDRS];
	long seq;
	while ((seq = claim()) >= 0) {
		const char *name = names[seq % nnames];
		if (rate > 0) {
			int64_t due = start_ns + (int64_t)((double)seq * 1e9 / (double)rate);
			struct timespec ts = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
			}
		}
		/* No AI_ADDRCONFIG: both families are always asked for, as in most programs.
		 * SOCK_STREAM only, so each address is listed once. */
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
		struct addrinfo *res = NULL;
		int64_t start = now_ns(CLOCK_REALTIME);
		int rc = getaddrinfo(name, NULL, &hints, &res);
		int64_t end = now_ns(CLOCK_REALTIME);

		int n = 0;
		if (rc == 0) {
			for (struct addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
				const void *src = ai->ai_family == AF_INET6
					? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
					: (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
				if (!inet_ntop(ai->ai_family, src, bufs[n], sizeof bufs[n])) continue;
				int dup = 0;
				for (int i = 0; i < n; i++) dup |= strcmp(addrs[i], bufs[n]) == 0;
				if (!dup) { addrs[n] = bufs[n]; n++; }
			}
			freeaddrinfo(res);
			qsort(addrs, n, sizeof addrs[0], cmpstr);
		}
		int off = snprintf(line, sizeof line, "%ld\t%s\t%lld\t%lld\t%s\t", seq, name,
			(long long)start, (long long)end, rc == 0 ? "ok" : eai_name(rc));
		if (n == 0) off += snprintf(line + off, sizeof line - off, "-");
		for (int i = 0; i < n && off < (int)sizeof line; i++)
			off += snprintf(line + off, sizeof line - off, "%s%s", i ? "," : "", addrs[i]);
		if (off >= (int)sizeof line - 1) off = sizeof line - 2;
		line[off++] = '\n';
		pthread_mutex_lock(&out_mu);
		fwrite(line, 1, off, stdout);
		pthread_mutex_unlock(&out_mu);
	}
	return NULL;
}

static long parse_num(const char *flag, const char *s, long lo, long hi) {
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "lookup: %s %s: want an integer in [%ld, %ld]\n", flag, s, lo, hi);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv) {
	int threads = 8, opt;
	while ((opt = getopt(argc, argv, "t:n:d:r:")) != -1) {
		switch (opt) {
		case 't': threads = (int)parse_num("-t", optarg, 1, 512); break;
		case 'n': total = parse_num("-n", optarg, 1, 100000000); break;
		case 'd': duration_ms = parse_num("-d", optarg, 1, 86400000); break;
		case 'r': rate = parse_num("-r", optarg, 1, 1000000); break;
		default:
			fprintf(stderr, "usage: lookup [-t threads] [-n lookups] [-d duration_ms] [-r rate] name...\n");
			return 2;
		}
	}
	names = argv + optind;
	nnames = argc - optind;
	if (nnames == 0) {
		fprintf(stderr, "lookup: no names given\n");
		return 2;
	}
	if (total < 0) total = nnames;
	start_ns = now_ns(CLOCK_MONOTONIC);
	if (duration_ms >= 0) deadline_ns = start_ns + duration_ms * 1000000LL;
	/* Lines are assembled whole and written under a lock; a big buffer keeps output from
	 * competing with the lookups being timed. */
	setvbuf(stdout, NULL, _IOFBF, 1 << 20);

	pthread_t *tids = calloc(threads, sizeof *tids);
	if (!tids) return 1;
	int started = 0;
	for (int i = 0; i < threads; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&tids[i], &attr, worker, NULL) == 0) started++;
		else fprintf(stderr, "lookup: pthread_create failed for thread %d\n", i);
		pthread_attr_destroy(&attr);
	}
	if (started == 0) return 1;
	for (int i = 0; i < threads; i++)
		if (tids[i]) pthread_join(tids[i], NULL);
	fflush(stdout);
	return 0;
}
