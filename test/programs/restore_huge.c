/* Hugetlb memory across a restore: SIZE_MIB of private MAP_HUGETLB memory
 * with 2 MiB pages, filled with a pattern except one huge page never touched
 * (absent) and one written with zeros. After GOFILE exists it verifies every
 * huge page and prints "HUGE OK" (or "HUGE FAIL <offset>"). With "events",
 * after GOFILE and before verifying: MADV_DONTNEED of huge page 2 (reads zero
 * afterwards) and munmap of huge page 3 (not verified). Prints "READY <pid>"
 * once filled. With "fork", it forks after GOFILE and the child verifies too
 * ("CHILD HUGE OK"). With "shared" the memory is MAP_SHARED (a shared
 * hugetlb object). Usage: restore_huge SIZE_MIB GOFILE [events|fork|shared] */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#define SEED 0x4a9e5eedULL
#define HUGE (2UL << 20)

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) LR_DIE("usage: restore_huge SIZE_MIB GOFILE [events]");
  const size_t len = (size_t)atol(argv[1]) << 20;
  const int events = argc == 4 && strcmp(argv[3], "events") == 0;
  const int forks = argc == 4 && strcmp(argv[3], "fork") == 0;
  const int shared = argc == 4 && strcmp(argv[3], "shared") == 0;
  if (len < 6 * HUGE || len % HUGE != 0) LR_DIE("SIZE_MIB must be a multiple of 2 and at least 12");
  unsigned char *mem =
      mmap(NULL, len, PROT_READ | PROT_WRITE,
           (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
  if (mem == MAP_FAILED) LR_DIE("mmap MAP_HUGETLB failed: %s", strerror(errno));
  const size_t untouched = len - HUGE, zeroed = len - 2 * HUGE;
  for (size_t off = 0; off < untouched; off += 8) {
    ((uint64_t *)(mem + off))[0] = off >= zeroed ? 0 : lr_pattern_word(SEED, 0, off);
  }
  lr_say("READY %ld\n", (long)getpid());
  struct stat st;
  while (stat(argv[2], &st) != 0) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  pid_t child = forks ? fork() : -1;
  if (events) {
    if (madvise(mem + 2 * HUGE, HUGE, MADV_DONTNEED) != 0)
      LR_DIE("MADV_DONTNEED: %s", strerror(errno));
    if (munmap(mem + 3 * HUGE, HUGE) != 0) LR_DIE("munmap: %s", strerror(errno));
  }
  for (size_t off = 0; off < len; off += 8) {
    if (events && off >= 3 * HUGE && off < 4 * HUGE) continue;
    int zero = off >= zeroed || (events && off >= 2 * HUGE && off < 3 * HUGE);
    uint64_t want = zero ? 0 : lr_pattern_word(SEED, 0, off);
    if (((uint64_t *)(mem + off))[0] != want) {
      lr_say("HUGE FAIL 0x%lx\n", (unsigned long)off);
      return 1;
    }
  }
  if (child == 0) {
    lr_say("CHILD HUGE OK\n");
    return 0;
  }
  if (child > 0) {
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      lr_say("CHILD FAIL %d\n", status);
      return 1;
    }
  }
  lr_say("HUGE OK\n");
  return 0;
}
