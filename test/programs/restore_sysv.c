/* System V shared memory across a restored tree. The parent creates segment
 * A (key KEY, 12 MiB + 100 bytes, mode 0640) and segment B (IPC_PRIVATE,
 * 4 MiB, removed with IPC_RMID once attached), fills both with patterns (a
 * few pages left zero), cuts its attach of A in pieces (a MiB unmapped, 64
 * KiB made read-only) and forks two children; child 2 also attaches A a
 * second time, read-only. After GOFILE exists they exchange writes through
 * both segments in turn (parent, child 1, child 2, each waiting for the
 * previous through a control page of A), every process verifies every page
 * it maps ("VERIFY OK <role>"), child 1 detaches A with shmdt ("SHMDT OK"),
 * and the parent checks that KEY still names A and that B is still marked
 * removed, waits for its children and prints "ALL OK". The segment ids are
 * printed first ("SEGMENTS <A> <B>"), then "READY <parent> <child1> <child2>".
 * With "probe" instead: whether userfaultfd can register an attach
 * ("REGISTER OK" or "REGISTER <errno name>").
 * Usage: restore_sysv KEY GOFILE | restore_sysv probe */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define SEED_A 0x5a5a5eedULL
#define SEED_B 0xb0b05eedULL
#define SEED_MARK 0x3a3a0000ULL
#define PAGE 4096UL
#define MIB (1UL << 20)
#define A_SIZE (12 * MIB + 100)
#define B_SIZE (4 * MIB)
#define CTL_OFF (12 * MIB - PAGE) /* control page of A: zero at dump */
#define HOLE (4 * MIB)            /* unmapped MiB of the parent's attach */
#define RO (6 * MIB)              /* read-only 64 KiB */
#define RO_LEN (64 * 1024)

static char role[16] = "parent";

static int probe(void) {
  int id = shmget(IPC_PRIVATE, MIB, IPC_CREAT | 0600);
  void *p = shmat(id, NULL, 0);
  shmctl(id, IPC_RMID, NULL);
  if (p == (void *)-1) LR_DIE("shmat: %s", strerror(errno));
  int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM};
  if (u < 0 || ioctl(u, UFFDIO_API, &api) != 0) LR_DIE("userfaultfd: %s", strerror(errno));
  struct uffdio_register r = {.range = {(uintptr_t)p, MIB}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(u, UFFDIO_REGISTER, &r) == 0)
    lr_say("REGISTER OK\n");
  else
    lr_say("REGISTER %s\n", strerrorname_np(errno));
  return 0;
}

/* The pattern page of A or B at `off`, or zero for the pages left zero. */
static int a_zero(size_t off) {
  return off == CTL_OFF || (off >= 2 * MIB && off < 2 * MIB + 3 * PAGE);
}
static int b_zero(size_t off) { return off >= MIB && off < MIB + 2 * PAGE; }

static int verify(const unsigned char *a, const unsigned char *b, size_t mark0, size_t mark1,
                  size_t mark2, int pieces) {
  for (size_t off = 0; off + PAGE <= A_SIZE; off += PAGE) {
    if (pieces && off >= HOLE && off < HOLE + MIB) continue;
    if (off == CTL_OFF) continue;
    uint64_t seed = off == mark0 || off == mark2 ? SEED_MARK : SEED_A;
    if (!lr_check_object_page(a + off, seed, off, a_zero(off))) {
      lr_say("VERIFY FAIL %s A 0x%lx\n", role, (unsigned long)off);
      return 0;
    }
  }
  for (size_t i = 0; i < A_SIZE % PAGE; i++) {
    if (a[12 * MIB + i] != (unsigned char)(i * 7 + 1)) {
      lr_say("VERIFY FAIL %s A tail %zu\n", role, i);
      return 0;
    }
  }
  for (size_t off = 0; off < B_SIZE; off += PAGE) {
    if (!lr_check_object_page(b + off, off == mark1 ? SEED_MARK : SEED_B, off, b_zero(off))) {
      lr_say("VERIFY FAIL %s B 0x%lx\n", role, (unsigned long)off);
      return 0;
    }
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "probe") == 0) return probe();
  if (argc != 3) LR_DIE("usage: restore_sysv KEY GOFILE | restore_sysv probe");
  key_t key = (key_t)strtol(argv[1], NULL, 0);
  int ida = shmget(key, A_SIZE, IPC_CREAT | IPC_EXCL | 0640);
  int idb = shmget(IPC_PRIVATE, B_SIZE, IPC_CREAT | 0600);
  if (ida < 0 || idb < 0) LR_DIE("shmget: %s", strerror(errno));
  unsigned char *a = shmat(ida, NULL, 0), *b = shmat(idb, NULL, 0);
  if (a == (void *)-1 || b == (void *)-1) LR_DIE("shmat: %s", strerror(errno));
  if (shmctl(idb, IPC_RMID, NULL) != 0) LR_DIE("IPC_RMID: %s", strerror(errno));
  for (size_t off = 0; off + PAGE <= A_SIZE; off += PAGE)
    if (!a_zero(off)) lr_fill_object_page(a + off, SEED_A, off);
  for (size_t i = 0; i < A_SIZE % PAGE; i++) a[12 * MIB + i] = (unsigned char)(i * 7 + 1);
  for (size_t off = 0; off < B_SIZE; off += PAGE)
    if (!b_zero(off)) lr_fill_object_page(b + off, SEED_B, off);
  if (munmap(a + HOLE, MIB) != 0 || mprotect(a + RO, RO_LEN, PROT_READ) != 0)
    LR_DIE("cut: %s", strerror(errno));
  lr_say("SEGMENTS %d %d\n", ida, idb);
  volatile uint64_t *ctl = (volatile uint64_t *)(a + CTL_OFF);
  const size_t mark0 = 5 * PAGE, mark1 = 7 * PAGE, mark2 = 9 * MIB;

  pid_t kids[2];
  int me = lr_fork_two(kids, role, sizeof role); /* 0 parent, 1, 2 children */
  unsigned char *again = NULL;                   /* child 2's second, read-only attach */
  if (me == 2 && (again = shmat(ida, NULL, SHM_RDONLY)) == (void *)-1)
    LR_DIE("shmat: %s", strerror(errno));
  if (me == 2) {
    lr_say("READY %ld %ld %ld\n", (long)getppid(), (long)kids[0], (long)getpid());
  }
  struct stat st;
  while (stat(argv[2], &st) != 0) lr_nap(10);

  if (me == 0) {
    lr_fill_object_page(a + mark0, SEED_MARK, mark0);
    ctl[0] = 1;
  } else if (me == 1) {
    lr_wait_flag(&ctl[0]);
    lr_fill_object_page(b + mark1, SEED_MARK, mark1);
    ctl[1] = 1;
  } else {
    lr_wait_flag(&ctl[1]);
    lr_fill_object_page(a + mark2, SEED_MARK, mark2);
    ctl[2] = 1;
  }
  lr_wait_flag(&ctl[2]);
  if (!verify(a, b, mark0, mark1, mark2, 1)) return 1;
  if (again && !verify(again, b, mark0, mark1, mark2, 0)) return 1;
  lr_say("VERIFY OK %s\n", role);
  if (me == 1) {
    if (shmdt(a) != 0) LR_DIE("shmdt: %s", strerror(errno));
    lr_say("SHMDT OK\n");
  }
  if (me != 0) return 0;
  struct shmid_ds ds;
  if (shmget(key, 0, 0) != ida) lr_say("KEY FAIL\n");
  if (shmctl(idb, IPC_STAT, &ds) != 0 || (ds.shm_perm.mode & SHM_DEST) == 0)
    lr_say("REMOVED FAIL\n");
  if (!lr_wait_two(kids)) return 1;
  lr_say("ALL OK\n");
  return 0;
}
