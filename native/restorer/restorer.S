/*
 * lazyrestore-restorer: the program every restored task starts as.
 * Man pages: execve(2), ptrace(2), clone3(2), exit_group(2).
 *
 * It has no libc and no data: after execve(2) under PTRACE_TRACEME it stops
 * at its entry point (the exec SIGTRAP) and never runs on its own. The
 * restoring tracer injects syscalls through the `syscall; int3` pair at
 * `lr_gadget` (entry + 2): it points rip there, sets the registers, and the
 * int3 traps back to the tracer with the result in rax. Tasks created by an
 * injected clone3(2) start at the int3 after the syscall, already traced.
 *
 * Started by hand (not under a tracer), it just exits with status 127.
 */
	.text
	.globl	_start
	.type	_start, @function
_start:
	jmp	1f
	.globl	lr_gadget
lr_gadget:
	syscall
	int3
	jmp	lr_gadget
1:
	mov	$231, %eax	/* exit_group */
	mov	$127, %edi
	syscall
	hlt
	.size	_start, . - _start

	.section .note.GNU-stack, "", @progbits
