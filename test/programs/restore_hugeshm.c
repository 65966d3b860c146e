/* Shared hugetlb memory across a restored tree: a parent and two children
 * share a SIZE_MIB MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB mapping and an 8 MiB
 * MFD_HUGETLB memfd (its fd closed), 2 MiB pages, filled with patterns before
 * the dump except for huge pages never touched (they must read zero). After
 * GOFILE exists they exchange writes through both objects in turn (parent,
 * child 1, child 2, each waiting for the previous through a control word in
 * the memfd's last huge page), then every process verifies every page it
 * maps and prints "VERIFY OK <role>"; the parent waits for its children and
 * prints "ALL OK".
 * With "events", after GOFILE and before any other process touches the
 * anonymous object: the parent reads huge page 1 (filling it) and punches it
 * and huge page 4, still lazy, out of the object (MADV_REMOVE: zero for all)
 * and drops its own page table entries of huge page 3 (MADV_DONTNEED:
 * data kept), and child 1 unmaps huge page 2 of its mapping (the others keep
 * it). With "partial", the parent punches 4 KiB out of huge page 4 only (its
 * image data with that part zero would be the answer). With "private", the
 * memfd is also mapped MAP_PRIVATE (which a dump refuses).
 * Usage: restore_hugeshm SIZE_MIB GOFILE [events|partial|private] */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26)
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#define SEED_ANON 0x4a9e5111ULL
#define SEED_MEMFD 0x4a9efdfdULL
#define SEED_MARK 0x3b3b0000ULL
#define PAGE 4096UL
#define HUGE (2UL << 20)
#define MEMFD_SIZE (4 * HUGE)
/* The control words: in huge page 3 of the memfd, never touched before the dump. */
#define CTL_OFF (MEMFD_SIZE - PAGE)

static char role[16] = "parent";

/* Fills [off, off+len) of an object with the pattern of `seed` (relative to the object). */
static void fill(unsigned char *base, uint64_t seed, size_t off, size_t len) {
  for (size_t at = off; at < off + len; at += PAGE) lr_fill_object_page(base + at, seed, at);
}

/* Whether `off` lies in the huge page at `start`. */
static int in_huge(size_t off, size_t start) { return off >= start && off < start + HUGE; }

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4)
    LR_DIE("usage: restore_hugeshm SIZE_MIB GOFILE [events|partial|private]");
  const size_t len = (size_t)atol(argv[1]) << 20;
  const int events = argc == 4 && strcmp(argv[3], "events") == 0;
  const int partial = argc == 4 && strcmp(argv[3], "partial") == 0;
  const int private = argc == 4 && strcmp(argv[3], "private") == 0;
  if (len != 8 * HUGE) LR_DIE("SIZE_MIB must be 16");
  const int anon_flags = MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB;
  unsigned char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, anon_flags, -1, 0);
  if (anon == MAP_FAILED) LR_DIE("mmap MAP_SHARED|MAP_HUGETLB failed: %s", strerror(errno));
  int fd = memfd_create("lr-hugeshm", MFD_HUGETLB | MFD_HUGE_2MB);
  if (fd < 0 || ftruncate(fd, MEMFD_SIZE) != 0) LR_DIE("MFD_HUGETLB memfd: %s", strerror(errno));
  unsigned char *mfd = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mfd == MAP_FAILED) LR_DIE("mmap memfd failed: %s", strerror(errno));
  if (private && mmap(NULL, HUGE, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
    LR_DIE("mmap memfd MAP_PRIVATE failed: %s", strerror(errno));
  close(fd); /* the mappings keep the object */
  /* Huge pages 0-5 of the anonymous object hold data, 6 and 7 are never touched; the memfd's
   * 0 and 1 hold data, 2 and 3 (the control word) are never touched. */
  fill(anon, SEED_ANON, 0, 6 * HUGE);
  fill(mfd, SEED_MEMFD, 0, 2 * HUGE);
  volatile uint64_t *ctl = (volatile uint64_t *)(mfd + CTL_OFF);

  const size_t mark0 = 5 * PAGE, mark1 = HUGE + 7 * PAGE, mark2 = 5 * HUGE + 3 * PAGE;
  const size_t filled = HUGE, unmapped = 2 * HUGE, dropped = 3 * HUGE, hole = 4 * HUGE;

  pid_t kids[2] = {-1, -1};
  int me = lr_fork_two(kids, role, sizeof role); /* 0 parent, 1, 2 children */
  if (me == 0) lr_say("READY %ld %ld %ld\n", (long)getpid(), (long)kids[0], (long)kids[1]);
  struct stat st;
  while (stat(argv[2], &st) != 0) lr_nap(10);

  if (me == 0) {
    if (events) {
      /* Huge page 1 is filled first (this read faults it in): punched once present. */
      if (!lr_check_object_page(anon + filled, SEED_ANON, filled, 0))
        LR_DIE("huge page 1 is wrong");
      if (madvise(anon + filled, HUGE, MADV_REMOVE) != 0)
        LR_DIE("MADV_REMOVE: %s", strerror(errno));
      if (madvise(anon + hole, HUGE, MADV_REMOVE) != 0) LR_DIE("MADV_REMOVE: %s", strerror(errno));
      if (madvise(anon + dropped, HUGE, MADV_DONTNEED) != 0)
        LR_DIE("MADV_DONTNEED: %s", strerror(errno));
    }
    if (partial && madvise(anon + hole + PAGE, PAGE, MADV_REMOVE) != 0)
      LR_DIE("MADV_REMOVE: %s", strerror(errno));
    fill(anon, SEED_MARK, mark0, PAGE);
    ctl[0] = 1;
  } else if (me == 1) {
    lr_wait_flag(&ctl[0]);
    fill(mfd, SEED_MARK, mark1, PAGE);
    if (events && munmap(anon + unmapped, HUGE) != 0) LR_DIE("munmap: %s", strerror(errno));
    ctl[1] = 1;
  } else {
    lr_wait_flag(&ctl[1]);
    fill(anon, SEED_MARK, mark2, PAGE);
    ctl[2] = 1;
  }
  lr_wait_flag(&ctl[2]);

  for (size_t off = 0; off < len; off += PAGE) {
    if (events && me == 1 && in_huge(off, unmapped)) continue;
    int zero = off >= 6 * HUGE || (events && (in_huge(off, hole) || in_huge(off, filled))) ||
               (partial && off == hole + PAGE);
    uint64_t seed = off == mark0 || off == mark2 ? SEED_MARK : SEED_ANON;
    if (!lr_check_object_page(anon + off, seed, off, zero)) {
      lr_say("VERIFY FAIL %s anon 0x%lx\n", role, (unsigned long)off);
      return 1;
    }
  }
  for (size_t off = 0; off < CTL_OFF; off += PAGE) {
    if (!lr_check_object_page(mfd + off, off == mark1 ? SEED_MARK : SEED_MEMFD, off,
                              off >= 2 * HUGE)) {
      lr_say("VERIFY FAIL %s memfd 0x%lx\n", role, (unsigned long)off);
      return 1;
    }
  }
  return lr_verified_two(me, kids, role);
}
