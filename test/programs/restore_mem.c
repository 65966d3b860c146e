/* A single-threaded workload for the restore tests: fills SIZE_MIB of
 * anonymous memory with a pattern, then writes "tick N" lines to stdout (a
 * file) until GOFILE exists; then checks every page, prints "CHECK OK" (or
 * "CHECK FAIL <offset>") and "DONE", and exits 0 (1 on a mismatch). With
 * "fork", it forks first and the child checks the memory too ("CHILD OK").
 * Usage: restore_mem SIZE_MIB GOFILE [fork] */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define SEED 0x5eed1234ULL

#include <stdarg.h>

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) LR_DIE("usage: restore_mem SIZE_MIB GOFILE [fork]");
  size_t len = (size_t)atol(argv[1]) << 20;
  unsigned char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) LR_DIE("mmap failed");
  lr_fill(mem, len, SEED);
  /* A few pages left zero in the middle: restored as zero pages, never as data. */
  memset(mem + len / 2, 0, 3 * 4096);
  lr_say("READY %ld %ld\n", (long)getpid(), (long)(len >> 20));
  struct stat st;
  for (long tick = 1; stat(argv[2], &st) != 0; tick++) {
    lr_say("tick %ld\n", tick);
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  pid_t child = -1;
  if (argc == 4) child = fork();
  for (size_t off = 0; off < len; off += 4096) {
    unsigned char *page = mem + off;
    long bad;
    if (off >= len / 2 && off < len / 2 + 3 * 4096) {
      for (int i = 0; i < 4096; i++)
        if (page[i] != 0) {
          lr_say("CHECK FAIL %ld (zero page)\n", (long)off);
          return 1;
        }
      continue;
    }
    /* lr_check patterns are relative to the fill base, page by page. */
    for (size_t w = 0; w < 4096 / 8; w++) {
      uint64_t want = lr_pattern_word(SEED, (uintptr_t)mem & ~4095ULL, off + w * 8);
      if (((uint64_t *)page)[w] != want) {
        bad = (long)(off + w * 8);
        lr_say("CHECK FAIL %ld\n", bad);
        return 1;
      }
    }
  }
  if (child == 0) {
    lr_say("CHILD OK\n");
    return 0;
  }
  if (child > 0) {
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      lr_say("CHILD FAIL %d\n", status);
      return 1;
    }
  }
  lr_say("CHECK OK %ld\n", (long)(len >> 20));
  lr_say("DONE\n");
  return 0;
}
