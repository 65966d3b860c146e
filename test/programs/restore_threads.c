/* A multi-threaded workload for the restore tests. Three threads wait on a
 * condition variable (futex), one on a mutex the main thread holds, and one
 * spins with patterns in ymm0-15 and r12-r15 (AVX; xmm only without it). Each
 * keeps a patterned array on its own stack and a value in thread-local
 * storage. The main thread writes "READY <tids...>" once all are in place,
 * then waits for GOFILE; it then releases everyone, and each thread reports
 * "T<i> OK <tid>" if its tid, stack, TLS and (spinner) registers are intact.
 * Usage: restore_threads GOFILE */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define WAITERS 3
#define LOCKER (WAITERS + 1)
#define SPINNER (WAITERS + 2)
#define THREADS (WAITERS + 3)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static int go;
static atomic_int ready;
static volatile int stop_spin;
static pid_t tids[THREADS];
static __thread uint64_t tls_value;
static int failures;

/* What a thread checks after the restore: same tid, same stack bytes, same TLS. */
static void check_self(int i, const uint64_t *stack_words, size_t n) {
  int ok = gettid() == tids[i] && tls_value == 0xabc0000ULL + (uint64_t)i;
  for (size_t k = 0; k < n; k++) ok &= stack_words[k] == lr_pattern_word(i, 0, k * 8);
  pthread_mutex_lock(&mu);
  if (!ok) failures++;
  lr_say("T%d %s %d\n", i, ok ? "OK" : "FAIL", (int)gettid());
  pthread_mutex_unlock(&mu);
}

static void *waiter(void *arg) {
  int i = (int)(intptr_t)arg;
  uint64_t words[1024];
  for (size_t k = 0; k < 1024; k++) words[k] = lr_pattern_word(i, 0, k * 8);
  tls_value = 0xabc0000ULL + (uint64_t)i;
  tids[i] = gettid();
  pthread_mutex_lock(&mu);
  atomic_fetch_add(&ready, 1);
  while (!go) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  check_self(i, words, 1024);
  return NULL;
}

static void *locker(void *arg) {
  int i = (int)(intptr_t)arg;
  uint64_t words[512];
  for (size_t k = 0; k < 512; k++) words[k] = lr_pattern_word(i, 0, k * 8);
  tls_value = 0xabc0000ULL + (uint64_t)i;
  tids[i] = gettid();
  atomic_fetch_add(&ready, 1);
  pthread_mutex_lock(&held); /* blocks in FUTEX_WAIT until main unlocks */
  pthread_mutex_unlock(&held);
  check_self(i, words, 512);
  return NULL;
}

static int have_avx(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_AVX) && (c & bit_OSXSAVE);
}

static void *spinner(void *arg) {
  int i = (int)(intptr_t)arg;
  uint64_t words[256];
  for (size_t k = 0; k < 256; k++) words[k] = lr_pattern_word(i, 0, k * 8);
  tls_value = 0xabc0000ULL + (uint64_t)i;
  tids[i] = gettid();
  uint64_t in[16 * 4 + 4] __attribute__((aligned(32)));
  uint64_t out[16 * 4 + 4] __attribute__((aligned(32)));
  for (size_t k = 0; k < 16 * 4 + 4; k++) in[k] = lr_pattern_word(0x5151, 0, k * 8);
  atomic_fetch_add(&ready, 1);
  if (have_avx()) {
#define LOAD(n) "vmovdqu " #n "*32(%[in]), %%ymm" #n "\n"
#define STORE(n) "vmovdqu %%ymm" #n ", " #n "*32(%[out])\n"
    __asm__ volatile(
        LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5) LOAD(6) LOAD(7) LOAD(8) LOAD(9) LOAD(10)
            LOAD(11) LOAD(12) LOAD(13) LOAD(14) LOAD(15)
        "mov 512(%[in]), %%r12\n mov 520(%[in]), %%r13\n mov 528(%[in]), %%r14\n mov 536(%[in]), %%r15\n"
        "1: pause\n cmpl $0, %[stop]\n je 1b\n"
        STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7) STORE(8) STORE(9)
            STORE(10) STORE(11) STORE(12) STORE(13) STORE(14) STORE(15)
        "mov %%r12, 512(%[out])\n mov %%r13, 520(%[out])\n mov %%r14, 528(%[out])\n mov %%r15, 536(%[out])\n"
        "vzeroupper\n"
        :
        : [in] "r"(in), [out] "r"(out), [stop] "m"(stop_spin)
        : "memory", "cc", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
          "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  } else {
#define LOADX(n) "movdqu " #n "*32(%[in]), %%xmm" #n "\n"
#define STOREX(n) "movdqu %%xmm" #n ", " #n "*32(%[out])\n"
    for (size_t k = 0; k < 16 * 4 + 4; k++) out[k] = in[k];
    __asm__ volatile(
        LOADX(0) LOADX(1) LOADX(2) LOADX(3) LOADX(4) LOADX(5) LOADX(6) LOADX(7) LOADX(8) LOADX(9)
            LOADX(10) LOADX(11) LOADX(12) LOADX(13) LOADX(14) LOADX(15)
        "mov 512(%[in]), %%r12\n mov 520(%[in]), %%r13\n mov 528(%[in]), %%r14\n mov 536(%[in]), %%r15\n"
        "1: pause\n cmpl $0, %[stop]\n je 1b\n"
        STOREX(0) STOREX(1) STOREX(2) STOREX(3) STOREX(4) STOREX(5) STOREX(6) STOREX(7) STOREX(8)
            STOREX(9) STOREX(10) STOREX(11) STOREX(12) STOREX(13) STOREX(14) STOREX(15)
        "mov %%r12, 512(%[out])\n mov %%r13, 520(%[out])\n mov %%r14, 528(%[out])\n mov %%r15, 536(%[out])\n"
        :
        : [in] "r"(in), [out] "r"(out), [stop] "m"(stop_spin)
        : "memory", "cc", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
          "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  }
  int regs_ok = 1;
  for (size_t k = 0; k < 16 * 4 + 4; k++) regs_ok &= in[k] == out[k];
  pthread_mutex_lock(&mu);
  if (!regs_ok) failures++;
  lr_say("REGS %s %s\n", have_avx() ? "ymm" : "xmm", regs_ok ? "OK" : "FAIL");
  pthread_mutex_unlock(&mu);
  check_self(i, words, 256);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) LR_DIE("usage: restore_threads GOFILE");
  pthread_t th[THREADS];
  pthread_mutex_lock(&held);
  tids[0] = gettid();
  tls_value = 0xabc0000ULL;
  for (int i = 1; i <= WAITERS; i++) pthread_create(&th[i], NULL, waiter, (void *)(intptr_t)i);
  pthread_create(&th[LOCKER], NULL, locker, (void *)(intptr_t)LOCKER);
  pthread_create(&th[SPINNER], NULL, spinner, (void *)(intptr_t)SPINNER);
  while (atomic_load(&ready) < THREADS - 1) usleep(1000);
  usleep(20000); /* the waiters are in their futex waits by now */
  lr_say("READY %d %d %d %d %d %d\n", tids[0], tids[1], tids[2], tids[3], tids[4], tids[5]);
  struct stat st;
  while (stat(argv[1], &st) != 0) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  pthread_mutex_lock(&mu);
  go = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&held);
  stop_spin = 1;
  for (int i = 1; i < THREADS; i++) pthread_join(th[i], NULL);
  check_self(0, (const uint64_t[]){lr_pattern_word(0, 0, 0)}, 1);
  lr_say("DONE %d\n", failures);
  return failures == 0 ? 0 : 1;
}
