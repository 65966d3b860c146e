/**
 * `lazyrestore check [--json]`: probes the kernel and this process's
 * privileges for everything lazy restore needs, like `criu check`.
 * Exit status 0 only when every requirement is met.
 */
import type { CommandModule } from 'yargs';
import {
  describeProbeError,
  probeKernel,
  type KernelReport,
  type ProbeError,
  type Requirement,
} from '../../daemon/kernel-probes.js';
import { UFFD_FEATURES, type UffdFeatureName } from '../../native/index.js';
import {
  failWith,
  formatBytes,
  formatSections,
  hex,
  jsonOption,
  printJson,
  yesNo,
  type Row,
  type Section,
} from '../output.js';

interface CheckArgs {
  json: boolean;
}

function failure(error: ProbeError | null): string {
  return error ? `no (${describeProbeError(error)})` : 'no';
}

function kernelSection(r: KernelReport): Section {
  return {
    title: 'Kernel',
    rows: [
      ['release', r.kernel.release],
      ['version', r.kernel.version],
      ['architecture', r.kernel.arch],
      ['pid_max', String(r.kernel.pidMax ?? 'unreadable')],
    ],
  };
}

function privilegeSection(r: KernelReport): Section {
  const p = r.privileges;
  const caps = Object.entries(p.capabilities).map(([name, has]): Row => [name, yesNo(has)]);
  return {
    title: 'Privileges',
    rows: [['uid / euid', `${p.uid} / ${p.euid}${p.root ? ' (root)' : ''}`], ['CapEff', p.capEff], ...caps],
  };
}

function uffdSection(r: KernelReport): Section {
  const u = r.userfaultfd;
  const features = (Object.keys(UFFD_FEATURES) as UffdFeatureName[]).map((name): Row => [
    `  ${name}`,
    u.usable ? yesNo(u.featureNames.includes(name)) : '-',
  ]);
  const rows: Row[] = [
    ['usable', u.usable ? `yes (via ${u.via})` : failure(u.error)],
    ['/dev/userfaultfd', u.devUserfaultfd ? 'present' : 'absent'],
    ['vm.unprivileged_userfaultfd', String(u.unprivilegedUserfaultfd ?? 'absent')],
    ['kernel-mode faults', yesNo(u.kernelFaults)],
    ['features offered', hex(u.features)],
    ...features,
  ];
  if (u.unknownFeatureBits !== 0) rows.push(['  (bits unknown to lazyrestore)', hex(u.unknownFeatureBits)]);
  return { title: 'userfaultfd', rows };
}

function processSections(r: KernelReport): Section[] {
  return [
    {
      title: 'ptrace',
      rows: [
        ['PTRACE_SEIZE + PTRACE_INTERRUPT', r.ptrace.works ? 'yes' : failure(r.ptrace.error)],
        ['kernel.yama.ptrace_scope', String(r.ptrace.yamaPtraceScope ?? 'absent (no Yama)')],
      ],
    },
    {
      title: 'pidfd',
      rows: [
        ['pidfd_open', r.pidfd.open ? 'yes' : failure(r.pidfd.error)],
        ['pidfd_getfd', r.pidfd.getfd ? 'yes' : failure(r.pidfd.error)],
      ],
    },
    {
      title: 'clone3',
      rows: [['set_tid', r.clone3SetTid.works ? `yes (got pid ${r.clone3SetTid.pid})` : failure(r.clone3SetTid.error)]],
    },
    {
      title: 'vDSO layout',
      rows: r.vdso.regions.length
        ? r.vdso.regions.map((v): Row => [v.name, `${hex(v.start)}-${hex(v.end)}  ${formatBytes(v.size)}`])
        : [['(none)', 'no [vdso] or [vvar] in /proc/self/maps']],
    },
  ];
}

function requirementRows(list: Requirement[], no: string): Row[] {
  return list.map((q): Row => [q.name, `${(q.ok ? 'ok' : no).padEnd(7)}  ${q.detail}`]);
}

export function formatReport(r: KernelReport): string {
  const sections = [
    kernelSection(r),
    privilegeSection(r),
    uffdSection(r),
    ...processSections(r),
    { title: 'Requirements', rows: requirementRows(r.requirements, 'MISSING') },
    { title: 'Optional', rows: requirementRows(r.optional, 'no') },
  ];
  return formatSections(sections) + '\n\n' + (r.ok ? 'Looks good.' : 'Lazy restore is not possible here.') + '\n';
}

export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check',
  describe: 'Check that this kernel and these privileges support lazy restore',
  builder: jsonOption,
  handler: (args) => {
    const report = probeKernel();
    if (args.json) printJson(report);
    else process.stdout.write(formatReport(report));
    const missing = report.requirements.filter((q) => !q.ok);
    if (missing.length) failWith(missing.map((q) => `missing ${q.name}: ${q.detail}`));
  },
};
