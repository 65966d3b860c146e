/* Workload for measuring dumps of large processes: <MiB> of private
 * anonymous memory, every page filled with pattern 9 (distinct content, so
 * nothing dedups within the image).
 *
 * Usage: dump_big <MiB>
 * Prints: READY pid=<pid> base=<addr> bytes=<n>
 * Commands: check  CHECK OK | CHECK BAD <offset>
 *           quit   exits 0 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "dump_common.h"

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 0;
  if (mib <= 0 || mib > 65536) LR_DIE("usage: dump_big <MiB>");
  dump_run_as_grandchild();
  size_t len = (size_t)mib << 20;
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) LR_DIE("mmap failed");
  lr_fill(base, len, 9);
  dump_say("READY pid=%d base=%#lx bytes=%zu\n", getpid(), (unsigned long)base, len);
  char cmd[256];
  while (dump_command(cmd, sizeof cmd)) {
    if (strcmp(cmd, "check") == 0) {
      long bad = lr_check(base, len, 9);
      if (bad >= 0)
        dump_say("CHECK BAD %ld\n", bad);
      else
        dump_say("CHECK OK\n");
    } else if (strcmp(cmd, "quit") == 0) {
      exit(0);
    }
  }
  return 0;
}
