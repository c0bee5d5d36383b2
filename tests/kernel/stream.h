/*
 * A deterministic byte stream that can be checked byte by byte and whose
 * errors can be explained (tests/kernel/streamcheck.c, sockmap_repro.c).
 *
 * Word i of a stream (bytes 8i..8i+7, big-endian) is mix(i ^ key), with
 * mix the splitmix64 finaliser: a bijection, so any 8 received bytes that
 * start a word name the offset they were sent at. A length or a hash only
 * says that something went wrong, and a duplicate and a loss of the same
 * size cancel in a length check; this says where, and what: "duplicated
 * 65483 bytes from offset X" or "lost N bytes".
 */
#ifndef MAILSPLICE_TEST_STREAM_H
#define MAILSPLICE_TEST_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static inline uint64_t stream_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* a * inverse = 1 mod 2^64 (Newton: each step doubles the correct bits) */
static inline uint64_t stream_inverse(uint64_t a)
{
	uint64_t x = a;
	for (int i = 0; i < 6; i++)
		x *= 2 - a * x;
	return x;
}

static inline uint64_t stream_unxorshift(uint64_t z, unsigned s)
{
	uint64_t x = z;
	for (unsigned k = s; k < 64; k += s)
		x = z ^ (x >> s);
	return x;
}

static inline uint64_t stream_unmix(uint64_t z)
{
	z = stream_unxorshift(z, 31);
	z *= stream_inverse(0x94d049bb133111ebULL);
	z = stream_unxorshift(z, 27);
	z *= stream_inverse(0xbf58476d1ce4e5b9ULL);
	return stream_unxorshift(z, 30);
}

/* the key of one direction of one test: seed and direction never collide */
static inline uint64_t stream_key(uint64_t seed, unsigned dir)
{
	return stream_mix(seed * 2 + dir + 0x9e3779b97f4a7c15ULL);
}

/* n bytes of the stream starting at byte offset off */
static inline void stream_fill(uint64_t key, uint64_t off, uint8_t *out, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint64_t p = off + i, w = stream_mix((p >> 3) ^ key);
		unsigned b = (unsigned)(p & 7);
		for (; b < 8 && i < n; b++, i++)
			out[i] = (uint8_t)(w >> (56 - 8 * b));
	}
}

#define STREAM_WINDOW 64

struct stream_check {
	uint64_t key;
	uint64_t off;               /* bytes seen so far */
	bool bad;                   /* a byte differed */
	uint64_t bad_at;            /* offset of the first differing byte */
	uint8_t win[STREAM_WINDOW]; /* what arrived from bad_at on */
	size_t win_len;
};

static inline void stream_check_init(struct stream_check *c, uint64_t key)
{
	memset(c, 0, sizeof(*c));
	c->key = key;
}

/* Feed received bytes; false once anything differed (keeps collecting the
 * window used to explain it). */
static inline bool stream_check(struct stream_check *c, const uint8_t *buf, size_t n)
{
	uint8_t exp[4096];
	size_t i = 0;

	if (c->bad) {
		while (i < n && c->win_len < STREAM_WINDOW)
			c->win[c->win_len++] = buf[i++];
		c->off += n;
		return false;
	}
	while (i < n) {
		size_t k = n - i < sizeof(exp) ? n - i : sizeof(exp);
		stream_fill(c->key, c->off + i, exp, k);
		if (memcmp(exp, buf + i, k) != 0) {
			size_t j = 0;
			while (exp[j] == buf[i + j])
				j++;
			c->bad = true;
			c->bad_at = c->off + i + j;
			i += j;
			while (i < n && c->win_len < STREAM_WINDOW)
				c->win[c->win_len++] = buf[i++];
			c->off += n;
			return false;
		}
		i += k;
	}
	c->off += n;
	return true;
}

/* What the bytes at the first difference were: written into out. */
static inline void stream_explain(const struct stream_check *c, char *out, size_t cap)
{
	if (!c->bad) {
		snprintf(out, cap, "exact");
		return;
	}
	for (unsigned a = 0; a < 8 && a + 8 + 8 <= c->win_len; a++) {
		uint64_t w = 0;
		for (int b = 0; b < 8; b++)
			w = w << 8 | c->win[a + b];
		uint64_t idx = stream_unmix(w) ^ c->key;
		if (idx > (1ULL << 45))
			continue; /* not a word of this stream */
		uint64_t src = idx * 8;
		if (src < a)
			continue;
		src -= a; /* the stream offset the window starts at */
		uint8_t exp[STREAM_WINDOW];
		stream_fill(c->key, src, exp, c->win_len);
		if (memcmp(exp, c->win, c->win_len) != 0)
			continue;
		if (src < c->bad_at)
			snprintf(out, cap,
			         "at offset %llu the stream went back to offset %llu: %llu bytes "
			         "duplicated",
			         (unsigned long long)c->bad_at, (unsigned long long)src,
			         (unsigned long long)(c->bad_at - src));
		else
			snprintf(out, cap,
			         "at offset %llu the stream jumped to offset %llu: %llu bytes lost",
			         (unsigned long long)c->bad_at, (unsigned long long)src,
			         (unsigned long long)(src - c->bad_at));
		return;
	}
	size_t zeros = 0;
	while (zeros < c->win_len && c->win[zeros] == 0)
		zeros++;
	snprintf(out, cap,
	         "at offset %llu: %zu bytes that are no part of this stream%s (first: %02x %02x "
	         "%02x %02x)",
	         (unsigned long long)c->bad_at, c->win_len,
	         zeros == c->win_len && zeros ? ", all zero" : "", c->win_len > 0 ? c->win[0] : 0,
	         c->win_len > 1 ? c->win[1] : 0, c->win_len > 2 ? c->win[2] : 0,
	         c->win_len > 3 ? c->win[3] : 0);
}

#endif
