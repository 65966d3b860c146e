/* Workload for the pidfd tests: owns a pipe whose read end the test takes with
 * pidfd_getfd(2), and a two-page buffer (the second page PROT_NONE) that the
 * test reads and writes with process_vm_readv/writev(2).
 *
 * Prints: READY <pipe read fd> <buffer address> <page size>
 * Commands (one per line on stdin):
 *   write <text>  writes <text> into the pipe, then prints WROTE
 *   print         prints BUF <NUL-terminated contents of the first page>
 *   quit          exits 0 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

int main(void) {
  int fds[2];
  if (pipe(fds) != 0) LR_DIE("pipe failed");
  long page = sysconf(_SC_PAGESIZE);
  char *buf = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) LR_DIE("mmap failed");
  if (mprotect(buf + page, page, PROT_NONE) != 0) LR_DIE("mprotect failed");
  strcpy(buf, "lazyrestore-pidfd-initial");
  printf("READY %d %p %ld\n", fds[0], (void *)buf, page);
  fflush(stdout);

  char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "write ", 6) == 0) {
      size_t n = strlen(line + 6);
      if (write(fds[1], line + 6, n) != (ssize_t)n) LR_DIE("write failed");
      printf("WROTE\n");
    } else if (strcmp(line, "print") == 0) {
      buf[page - 1] = 0;
      printf("BUF %s\n", buf);
    } else if (strcmp(line, "quit") == 0) {
      return 0;
    } else {
      printf("ERR unknown command\n");
    }
    fflush(stdout);
  }
  return 0;
}
