/* The CPU's int8 multiply-accumulate peak: each thread runs ACC independent vpdpbusd chains
 * (-DMADDWD: vpmaddwd + vpaddd chains, for CPUs with AVX2 but no VNNI)
 * on register operands, no memory traffic, so only the instruction's throughput limits it.
 * Compile with -DWIDTH=512 (zmm, 64 u8 x s8 multiply-adds per instruction) or -DWIDTH=256 (ymm,
 * 32; some cores issue two of those per cycle but one zmm) and -DACC=chains: enough chains hide
 * the instruction's latency, too many spill registers; peak.py runs a few and keeps the best.
 *
 *   vnni_peak THREADS SECONDS REPEATS  ->  one line: {"threads": T, "gmacs": [per repeat]}
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef ACC
#define ACC 16
#endif
#ifndef WIDTH
#define WIDTH 512
#endif
#if defined(MADDWD)
/* a CPU without VNNI: vpmaddwd (int16 pairs into int32, exact on 8-bit values) + vpaddd, 16
 * multiply-adds per pair of instructions on ymm */
typedef __m256i vec;
#define SET1 _mm256_set1_epi32
#define DPBUSD(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#define FIRST(v) _mm256_extract_epi32(v, 0)
#elif WIDTH == 512
typedef __m512i vec;
#define SET1 _mm512_set1_epi32
#define DPBUSD _mm512_dpbusd_epi32
#define FIRST(v) _mm512_reduce_add_epi32(v)
#else
typedef __m256i vec;
#define SET1 _mm256_set1_epi32
#define DPBUSD _mm256_dpbusd_epi32
#define FIRST(v) _mm256_extract_epi32(v, 0)
#endif
#if defined(MADDWD)
#define MACS_PER_INSTR 16
#else
#define MACS_PER_INSTR (WIDTH / 8)
#endif

typedef struct { long iters; int seed; long long sink; } job_t;

static void *work(void *arg) {
    job_t *job = (job_t *)arg;
    /* operands from a runtime value, so the compiler cannot fold the chains away */
    vec a = SET1(job->seed), b = SET1(job->seed * 7 + 1);
    vec acc[ACC];
    for (int i = 0; i < ACC; i++) acc[i] = SET1(i);
    for (long n = 0; n < job->iters; n++) {
#pragma GCC unroll 32
        for (int i = 0; i < ACC; i++) acc[i] = DPBUSD(acc[i], a, b);
    }
    long long sum = 0;
    for (int i = 0; i < ACC; i++) sum += FIRST(acc[i]);
    job->sink = sum;
    return NULL;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double run(int threads, long iters, int seed) {
    pthread_t tid[256];
    job_t jobs[256];
    double start = seconds();
    for (int t = 0; t < threads; t++) {
        jobs[t].iters = iters;
        jobs[t].seed = seed + t;
        pthread_create(&tid[t], NULL, work, &jobs[t]);
    }
    long long sink = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        sink += jobs[t].sink;
    }
    double elapsed = seconds() - start;
    if (sink == 42) fprintf(stderr, "\n"); /* keeps the result live */
    return (double)threads * iters * ACC * MACS_PER_INSTR / elapsed / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s THREADS SECONDS REPEATS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]), repeats = atoi(argv[3]);
    double target = atof(argv[2]);
    if (threads < 1 || threads > 256 || repeats < 1 || target <= 0) {
        fprintf(stderr, "THREADS in 1..256, SECONDS > 0, REPEATS >= 1\n");
        return 2;
    }
    /* calibrate the iteration count on one short run so each repeat lasts about SECONDS */
    long iters = 100000;
    double rate = run(threads, iters, argc);
    iters = (long)(target * rate * 1e9 / (threads * ACC * (double)MACS_PER_INSTR));
    if (iters < 1000) iters = 1000;
    printf("{\"threads\": %d, \"gmacs\": [", threads);
    for (int r = 0; r < repeats; r++) printf("%s%.1f", r ? ", " : "", run(threads, iters, argc + r));
    printf("]}\n");
    return 0;
}
