/**
 * Every kernel fact lazyrestore depends on, gathered once (in the spirit of
 * CRIU's "kerndat"): what the kernel offers, what this process may use, and
 * the list of requirements lazy restore needs. Each probe exercises the real
 * mechanism on a throw-away object (a uffd, a child, a pidfd) rather than
 * trusting version numbers, and a probe that fails is reported, never thrown.
 */
import { accessSync, closeSync, constants, existsSync, fstatSync, openSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { native, uffdFeatureNames, UFFD_FEATURES, type UffdFeatureName } from '../native/index.js';

/** A probe that threw: the error's code (errno name, or the error class) and message. */
export interface ProbeError {
  code: string;
  message: string;
}

export interface Requirement {
  name: string;
  ok: boolean;
  detail: string;
}

export const VDSO_REGION_NAMES = ['[vvar]', '[vvar_vclock]', '[vdso]'] as const;
export type VdsoRegionName = (typeof VDSO_REGION_NAMES)[number];

export interface VdsoRegion {
  name: VdsoRegionName;
  start: number;
  end: number;
  size: number;
}

/** capabilities(7) numbers of the capabilities lazyrestore cares about. */
export const CAPABILITIES = { CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21, CAP_CHECKPOINT_RESTORE: 40 } as const;
export type CapabilityName = keyof typeof CAPABILITIES;

export interface KernelReport {
  kernel: {
    release: string;
    version: string;
    /** uname machine, e.g. 'x86_64'. Only x86_64 is supported. */
    arch: string;
    /** /proc/sys/kernel/pid_max, or null when unreadable. */
    pidMax: number | null;
  };
  privileges: {
    uid: number;
    euid: number;
    root: boolean;
    /** CapEff of /proc/self/status, as the kernel prints it (hex). */
    capEff: string;
    capabilities: Record<CapabilityName, boolean>;
    /** /proc/sys/kernel/cap_last_cap: the highest capability this kernel knows. */
    capLastCap: number | null;
  };
  userfaultfd: {
    usable: boolean;
    via: 'syscall' | '/dev/userfaultfd' | null;
    devUserfaultfd: boolean;
    /** vm.unprivileged_userfaultfd, or null when the sysctl is absent. */
    unprivilegedUserfaultfd: number | null;
    /** Whether faults the kernel itself takes (e.g. read(2) into a lazy buffer) can be served. */
    kernelFaults: boolean;
    /** Every UFFD_FEATURE_* bit offered (UFFDIO_API with features = 0). */
    features: number;
    featureNames: UffdFeatureName[];
    /** Offered bits this build has no name for (a newer kernel). */
    unknownFeatureBits: number;
    ioctls: number;
    error: ProbeError | null;
  };
  ptrace: {
    works: boolean;
    /** /proc/sys/kernel/yama/ptrace_scope, or null without Yama. */
    yamaPtraceScope: number | null;
    error: ProbeError | null;
  };
  pidfd: {
    open: boolean;
    getfd: boolean;
    error: ProbeError | null;
  };
  clone3SetTid: {
    works: boolean;
    /** The pid the probe's child obtained. */
    pid: number | null;
    error: ProbeError | null;
  };
  vdso: {
    regions: VdsoRegion[];
  };
  /** What lazy restore needs; every one must be ok. */
  requirements: Requirement[];
  /** Reported, not required: features that widen what can be restored lazily. */
  optional: Requirement[];
  /** Every requirement is met. */
  ok: boolean;
}

const REQUIRED_UFFD_FEATURES: UffdFeatureName[] = [
  'UFFD_FEATURE_EVENT_FORK',
  'UFFD_FEATURE_EVENT_REMAP',
  'UFFD_FEATURE_EVENT_REMOVE',
  'UFFD_FEATURE_EVENT_UNMAP',
];
const OPTIONAL_UFFD_FEATURES: UffdFeatureName[] = [
  'UFFD_FEATURE_MISSING_SHMEM',
  'UFFD_FEATURE_MISSING_HUGETLBFS',
  'UFFD_FEATURE_PAGEFAULT_FLAG_WP',
  'UFFD_FEATURE_MOVE',
];

export function probeError(e: unknown): ProbeError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : e.name, message: e.message };
  }
  return { code: 'UNKNOWN', message: String(e) };
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function readInt(path: string): number | null {
  const text = readText(path);
  if (text === null) return null;
  const n = Number.parseInt(text.trim(), 10);
  return Number.isNaN(n) ? null : n;
}

function probeKernelInfo(): KernelReport['kernel'] {
  return {
    release: os.release(),
    version: os.version(),
    arch: os.machine(),
    pidMax: readInt('/proc/sys/kernel/pid_max'),
  };
}

function probePrivileges(): KernelReport['privileges'] {
  const status = readText('/proc/self/status') ?? '';
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  const mask = BigInt('0x' + capEff);
  const has = (cap: number): boolean => ((mask >> BigInt(cap)) & 1n) === 1n;
  const euid = process.geteuid?.() ?? -1;
  return {
    uid: process.getuid?.() ?? -1,
    euid,
    root: euid === 0,
    capEff,
    capabilities: {
      CAP_SYS_PTRACE: has(CAPABILITIES.CAP_SYS_PTRACE),
      CAP_SYS_ADMIN: has(CAPABILITIES.CAP_SYS_ADMIN),
      CAP_CHECKPOINT_RESTORE: has(CAPABILITIES.CAP_CHECKPOINT_RESTORE),
    },
    capLastCap: readInt('/proc/sys/kernel/cap_last_cap'),
  };
}

function canOpenReadWrite(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function probeUserfaultfd(privileges: KernelReport['privileges']): KernelReport['userfaultfd'] {
  const unprivilegedUserfaultfd = readInt('/proc/sys/vm/unprivileged_userfaultfd');
  const devUserfaultfd = existsSync('/dev/userfaultfd');
  const base = { devUserfaultfd, unprivilegedUserfaultfd };
  try {
    const probe = native.uffdProbe();
    const known = Object.values(UFFD_FEATURES).reduce((a, b) => a | b, 0);
    // userfaultfd(2): without the sysctl, only CAP_SYS_PTRACE (or a uffd from
    // /dev/userfaultfd, gated by its file mode) may handle kernel-mode faults.
    const kernelFaults =
      unprivilegedUserfaultfd === 1 ||
      privileges.capabilities.CAP_SYS_PTRACE ||
      (devUserfaultfd && canOpenReadWrite('/dev/userfaultfd'));
    return {
      ...base,
      usable: true,
      via: probe.via,
      kernelFaults,
      features: probe.features,
      featureNames: uffdFeatureNames(probe.features),
      unknownFeatureBits: probe.features & ~known,
      ioctls: probe.ioctls,
      error: null,
    };
  } catch (e) {
    const error = probeError(e);
    const empty = { features: 0, featureNames: [], unknownFeatureBits: 0, ioctls: 0 };
    return { ...base, ...empty, usable: false, via: null, kernelFaults: false, error };
  }
}

function probePtraceFacility(): KernelReport['ptrace'] {
  const yamaPtraceScope = readInt('/proc/sys/kernel/yama/ptrace_scope');
  try {
    return { works: native.probePtrace(), yamaPtraceScope, error: null };
  } catch (e) {
    return { works: false, yamaPtraceScope, error: probeError(e) };
  }
}

/** pidfd_open(2) on ourselves, then pidfd_getfd(2) of one of our own fds: the copy must be the same file. */
function probePidfd(): KernelReport['pidfd'] {
  let open = false;
  let pidfd = -1;
  let target = -1;
  let copy = -1;
  try {
    pidfd = native.pidfdOpen(process.pid, 0);
    open = true;
    target = openSync('/proc/self/status', 'r');
    copy = native.pidfdGetfd(pidfd, target);
    const a = fstatSync(target);
    const b = fstatSync(copy);
    if (a.dev !== b.dev || a.ino !== b.ino) {
      return { open, getfd: false, error: { code: 'EPROTO', message: 'pidfd_getfd returned a different file' } };
    }
    return { open, getfd: true, error: null };
  } catch (e) {
    return { open, getfd: false, error: probeError(e) };
  } finally {
    for (const fd of [copy, target, pidfd]) if (fd >= 0) closeSync(fd);
  }
}

function probeClone3(): KernelReport['clone3SetTid'] {
  try {
    return { works: true, pid: native.probeClone3SetTid(), error: null };
  } catch (e) {
    return { works: false, pid: null, error: probeError(e) };
  }
}

/** The [vvar], [vvar_vclock] and [vdso] lines of /proc/self/maps. */
export function vdsoLayout(maps: string = readText('/proc/self/maps') ?? ''): VdsoRegion[] {
  const regions: VdsoRegion[] = [];
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+)\s+\S+\s+\S+\s+\S+\s+\d+\s+(\[[a-z_]+\])$/.exec(line.trim());
    if (!m || !(VDSO_REGION_NAMES as readonly string[]).includes(m[3]!)) continue;
    const start = Number.parseInt(m[1]!, 16);
    const end = Number.parseInt(m[2]!, 16);
    regions.push({ name: m[3] as VdsoRegionName, start, end, size: end - start });
  }
  return regions;
}

/** "CODE: message", without repeating the code when the message starts with it (as SystemError's do). */
export function describeProbeError(error: ProbeError): string {
  return error.message.startsWith(`${error.code}:`) ? error.message : `${error.code}: ${error.message}`;
}

function failed(what: string, error: ProbeError | null): string {
  return error ? `${what}: ${describeProbeError(error)}` : what;
}

function privilegeRequirement(p: KernelReport['privileges']): Requirement {
  // CAP_CHECKPOINT_RESTORE exists from Linux 5.9; older kernels cannot grant it.
  const wanted: CapabilityName[] = ['CAP_SYS_ADMIN', 'CAP_SYS_PTRACE'];
  if ((p.capLastCap ?? 0) >= CAPABILITIES.CAP_CHECKPOINT_RESTORE) wanted.push('CAP_CHECKPOINT_RESTORE');
  const missing = wanted.filter((cap) => !p.capabilities[cap]);
  const who = p.root ? 'root (euid 0)' : `euid ${p.euid}`;
  if (missing.length === 0) return { name: 'privileges', ok: true, detail: `${who} with ${wanted.join(', ')}` };
  const hint = p.root ? 'they are not in the effective set (dropped by a container or setpriv?)' : 'run as root';
  return { name: 'privileges', ok: false, detail: `${who} lacks ${missing.join(', ')}: ${hint}` };
}

function uffdRequirements(u: KernelReport['userfaultfd'], p: KernelReport['privileges']): Requirement[] {
  let detail: string;
  if (!u.usable) detail = failed('userfaultfd unusable', u.error);
  else if (!u.kernelFaults) {
    detail = `kernel-mode faults cannot be served: vm.unprivileged_userfaultfd=${u.unprivilegedUserfaultfd ?? 'absent'} and no CAP_SYS_PTRACE`;
  } else detail = `via ${u.via}, kernel-mode faults served`;
  const usable: Requirement = { name: 'userfaultfd with privilege', ok: u.usable && u.kernelFaults, detail };
  const features = REQUIRED_UFFD_FEATURES.map((name): Requirement => {
    if (!u.usable) return { name, ok: false, detail: 'userfaultfd unusable' };
    if (!u.featureNames.includes(name)) return { name, ok: false, detail: 'not offered by this kernel' };
    // UFFDIO_API refuses EVENT_FORK with EPERM to callers without CAP_SYS_PTRACE.
    if (name === 'UFFD_FEATURE_EVENT_FORK' && !p.capabilities.CAP_SYS_PTRACE) {
      return { name, ok: false, detail: 'offered, but enabling it needs CAP_SYS_PTRACE' };
    }
    return { name, ok: true, detail: 'offered' };
  });
  return [usable, ...features];
}

function requirementsOf(r: Omit<KernelReport, 'requirements' | 'optional' | 'ok'>): Requirement[] {
  const arch = r.kernel.arch === 'x86_64';
  const vdso = r.vdso.regions.find((region) => region.name === '[vdso]');
  let ptraceDetail = r.ptrace.works ? 'PTRACE_SEIZE + PTRACE_INTERRUPT work' : failed('probe failed', r.ptrace.error);
  if (r.ptrace.yamaPtraceScope === 3) ptraceDetail = 'kernel.yama.ptrace_scope=3 forbids ptrace';
  return [
    { name: 'architecture', ok: arch, detail: arch ? r.kernel.arch : `unsupported architecture: ${r.kernel.arch}` },
    privilegeRequirement(r.privileges),
    ...uffdRequirements(r.userfaultfd, r.privileges),
    { name: 'ptrace', ok: r.ptrace.works && r.ptrace.yamaPtraceScope !== 3, detail: ptraceDetail },
    {
      name: 'pidfd_getfd',
      ok: r.pidfd.open && r.pidfd.getfd,
      detail: r.pidfd.getfd ? 'pidfd_open + pidfd_getfd work' : failed('probe failed', r.pidfd.error),
    },
    {
      name: 'clone3 set_tid',
      ok: r.clone3SetTid.works,
      detail: r.clone3SetTid.works
        ? `obtained pid ${r.clone3SetTid.pid}`
        : failed('probe failed', r.clone3SetTid.error),
    },
    {
      name: '[vdso]',
      ok: vdso !== undefined,
      detail: vdso ? `present (${vdso.size} bytes)` : 'no [vdso] in /proc/self/maps',
    },
  ];
}

function optionalOf(u: KernelReport['userfaultfd']): Requirement[] {
  return OPTIONAL_UFFD_FEATURES.map((name) => {
    const ok = u.featureNames.includes(name);
    return { name, ok, detail: ok ? 'offered' : u.usable ? 'not offered by this kernel' : 'userfaultfd unusable' };
  });
}

/** Runs every probe. Never throws for a missing facility: it shows up as a failed requirement. */
export function probeKernel(): KernelReport {
  const privileges = probePrivileges();
  const facts = {
    kernel: probeKernelInfo(),
    privileges,
    userfaultfd: probeUserfaultfd(privileges),
    ptrace: probePtraceFacility(),
    pidfd: probePidfd(),
    clone3SetTid: probeClone3(),
    vdso: { regions: vdsoLayout() },
  };
  const requirements = requirementsOf(facts);
  return { ...facts, requirements, optional: optionalOf(facts.userfaultfd), ok: requirements.every((q) => q.ok) };
}
