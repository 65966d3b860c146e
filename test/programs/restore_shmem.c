/* Shared memory across a restored tree: a parent and two children share a
 * SIZE_MIB MAP_SHARED|MAP_ANONYMOUS mapping and a memfd (its fd closed), both
 * filled with patterns before the dump (a few pages left zero). After GOFILE
 * exists they exchange writes through both objects in turn (parent, child 1,
 * child 2, each waiting for the previous through a control page of the
 * memfd), then every process verifies every page it maps and prints
 * "VERIFY OK <role>"; the parent waits for its children and prints "ALL OK".
 * With "events", after GOFILE: the parent punches a hole (MADV_REMOVE) into
 * one MiB of the anonymous object and drops its own page table entries
 * (MADV_DONTNEED) of another, and child 1 unmaps a third MiB of its own
 * mapping; the hole reads zero in every process, the other two keep their
 * data. With "forkremove", after GOFILE the parent forks a new child that
 * punches the same hole and exits, then goes on as without events.
 * With "punchwait": as with "events", but the parent prints "PUNCHED" after
 * its madvise calls and waits for GOFILE.2 before it goes on.
 * Usage: restore_shmem SIZE_MIB GOFILE [events|forkremove|punchwait] */
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

#define SEED_ANON 0xa11a5eedULL
#define SEED_MEMFD 0xfdfd5eedULL
#define SEED_MARK 0x3a3a0000ULL
#define PAGE 4096UL
#define MIB (1UL << 20)
#define MEMFD_SIZE (8 * MIB)
#define CTL_OFF (MEMFD_SIZE - PAGE) /* control page: zero at dump */

static char role[16] = "parent";

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4)
    LR_DIE("usage: restore_shmem SIZE_MIB GOFILE [events|forkremove|punchwait]");
  const size_t len = (size_t)atol(argv[1]) * MIB;
  const int punchwait = argc == 4 && strcmp(argv[3], "punchwait") == 0;
  const int events = punchwait || (argc == 4 && strcmp(argv[3], "events") == 0);
  const int forkremove = argc == 4 && strcmp(argv[3], "forkremove") == 0;
  unsigned char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (anon == MAP_FAILED) LR_DIE("mmap anon failed");
  int fd = memfd_create("lr-shmem", 0);
  if (fd < 0 || ftruncate(fd, MEMFD_SIZE) != 0) LR_DIE("memfd failed");
  unsigned char *mfd = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mfd == MAP_FAILED) LR_DIE("mmap memfd failed");
  close(fd); /* the mapping keeps the object */
  for (size_t off = 0; off < len; off += PAGE) lr_fill_object_page(anon + off, SEED_ANON, off);
  for (size_t off = 0; off < CTL_OFF; off += PAGE) lr_fill_object_page(mfd + off, SEED_MEMFD, off);
  /* Zero pages: restored as zero, never as data. */
  memset(anon + len / 2, 0, 3 * PAGE);
  memset(mfd + MIB, 0, 2 * PAGE);
  volatile uint64_t *ctl = (volatile uint64_t *)(mfd + CTL_OFF);

  /* Where each process writes its marker page, and the ranges of the events (near the end: the last
   * to be fetched in address order, so most likely still lazy when they happen). */
  const size_t mark0 = 5 * PAGE, mark1 = 7 * PAGE, mark2 = len / 4;
  const size_t hole = len - 3 * MIB, dropped = len - 2 * MIB, unmapped = len - MIB;

  pid_t kids[2];
  int me = lr_fork_two(kids, role, sizeof role); /* 0 parent, 1, 2 children */
  if (me == 0) lr_say("READY %ld %ld %ld\n", (long)getpid(), (long)kids[0], (long)kids[1]);
  struct stat st;
  while (stat(argv[2], &st) != 0) lr_nap(10);

  if (me == 0 && forkremove) {
    pid_t c = fork();
    if (c == 0) _exit(madvise(anon + hole, MIB, MADV_REMOVE) == 0 ? 0 : 1);
    if (c < 0 || waitpid(c, NULL, 0) != c) LR_DIE("fork or waitpid failed");
  }
  if (me == 0) {
    if (events) {
      if (madvise(anon + hole, MIB, MADV_REMOVE) != 0) LR_DIE("MADV_REMOVE: %s", strerror(errno));
      if (madvise(anon + dropped, MIB, MADV_DONTNEED) != 0)
        LR_DIE("MADV_DONTNEED: %s", strerror(errno));
    }
    if (punchwait) {
      char go2[4096];
      snprintf(go2, sizeof go2, "%s.2", argv[2]);
      lr_say("PUNCHED\n");
      while (stat(go2, &st) != 0) lr_nap(10);
    }
    lr_fill_object_page(anon + mark0, SEED_MARK, mark0);
    ctl[0] = 1;
  } else if (me == 1) {
    lr_wait_flag(&ctl[0]);
    lr_fill_object_page(mfd + mark1, SEED_MARK, mark1);
    if (events && munmap(anon + unmapped, MIB) != 0) LR_DIE("munmap: %s", strerror(errno));
    ctl[1] = 1;
  } else {
    lr_wait_flag(&ctl[1]);
    lr_fill_object_page(anon + mark2, SEED_MARK, mark2);
    ctl[2] = 1;
  }
  lr_wait_flag(&ctl[2]);

  for (size_t off = 0; off < len; off += PAGE) {
    if (events && me == 1 && off >= unmapped) break;
    int zero =
        (off >= len / 2 && off < len / 2 + 3 * PAGE) || (events && off >= hole && off < hole + MIB);
    uint64_t seed = off == mark0 || off == mark2 ? SEED_MARK : SEED_ANON;
    if (!lr_check_object_page(anon + off, seed, off, zero)) {
      lr_say("VERIFY FAIL %s anon 0x%lx\n", role, (unsigned long)off);
      return 1;
    }
  }
  for (size_t off = 0; off < CTL_OFF; off += PAGE) {
    int zero = off >= MIB && off < MIB + 2 * PAGE;
    if (!lr_check_object_page(mfd + off, off == mark1 ? SEED_MARK : SEED_MEMFD, off, zero)) {
      lr_say("VERIFY FAIL %s memfd 0x%lx\n", role, (unsigned long)off);
      return 1;
    }
  }
  return lr_verified_two(me, kids, role);
}
