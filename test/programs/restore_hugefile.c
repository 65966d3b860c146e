/* A file on a hugetlbfs mount mapped MAP_SHARED across a restore: FILE (2
 * huge pages) is created, mapped, huge page 0 filled with a pattern and the
 * fd closed. After GOFILE exists it verifies huge page 0 through its mapping,
 * writes "RESTORED MAPPING" at the start of huge page 1 (the test reads it
 * back from the file: the mapping is the file's) and prints "FILE OK" (or
 * "FILE FAIL <offset>"). With "private" the file is also mapped MAP_PRIVATE
 * (which a dump refuses). Prints "READY <pid>" once filled.
 * Usage: restore_hugefile FILE GOFILE [private] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define SEED 0x4a9ef11eULL
#define HUGE (2UL << 20)

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) LR_DIE("usage: restore_hugefile FILE GOFILE [private]");
  const int private = argc == 4 && strcmp(argv[3], "private") == 0;
  int fd = open(argv[1], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || ftruncate(fd, 2 * HUGE) != 0) LR_DIE("%s: %s", argv[1], strerror(errno));
  unsigned char *mem = mmap(NULL, 2 * HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) LR_DIE("mmap %s: %s", argv[1], strerror(errno));
  if (private && mmap(NULL, HUGE, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
    LR_DIE("mmap MAP_PRIVATE %s: %s", argv[1], strerror(errno));
  close(fd);
  for (size_t off = 0; off < HUGE; off += 8)
    ((uint64_t *)(mem + off))[0] = lr_pattern_word(SEED, 0, off);
  lr_say("READY %ld\n", (long)getpid());
  struct stat st;
  while (stat(argv[2], &st) != 0) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  for (size_t off = 0; off < HUGE; off += 8) {
    if (((uint64_t *)(mem + off))[0] != lr_pattern_word(SEED, 0, off)) {
      lr_say("FILE FAIL 0x%lx\n", (unsigned long)off);
      return 1;
    }
  }
  memcpy(mem + HUGE, "RESTORED MAPPING", 16);
  lr_say("FILE OK\n");
  return 0;
}
