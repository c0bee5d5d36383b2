/*
 * Benchmark (not a test): how long loading a big mapping file takes.
 *   build/bench/mapping_load [N=1000000]
 * Writes N "userI@example.org destination" lines to a temp file, then times
 * mapping_file_load() (median of 5) and reports entries/s and the RSS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mapping.h"
#include "util.h"

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	static const char *const dests[] = {"legacy", "stalwart"};
	const struct account_rules rules = {NORMALIZE_LOWERCASE, "example.org", "%"};
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	char path[] = "/tmp/ms-bench-mapping-XXXXXX";
	uint64_t times[5];
	char err[256];
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	for (long i = 0; i < n; i++)
		fprintf(f, "User%ld@Example.org\t%s\n", i, dests[i & 1]);
	fclose(f);
	long rss0 = rss_kb();
	for (int run = 0; run < 5; run++) {
		struct mapping_file mf = {.path = xstrdup(path),
					  .rules = &rules,
					  .dest_names = dests,
					  .n_dests = 2};
		uint64_t t0 = now_us();
		if (!mapping_file_load(&mf, err, sizeof(err))) {
			fprintf(stderr, "load failed: %s\n", err);
			return 1;
		}
		times[run] = now_us() - t0;
		if (run == 4)
			printf("entries=%zu rss_delta_mb=%.1f\n", strmap_len(&mf.table),
			       (double)(rss_kb() - rss0) / 1024);
		mapping_file_free(&mf);
	}
	unlink(path);
	qsort(times, 5, sizeof(times[0]), cmp_u64);
	printf("mapping_load n=%ld median=%.3fs min=%.3fs max=%.3fs (%.0f entries/s)\n", n,
	       times[2] / 1e6, times[0] / 1e6, times[4] / 1e6, n / (times[2] / 1e6));
	return 0;
}
