/**
 * TypeBox schemas of the REST API. They validate requests (api/app.ts compiles them with TypeBox), serialize
 * responses and produce the OpenAPI document, so what /openapi.json says is what the daemon enforces. Every
 * object a client sends rejects unknown properties.
 */
import { Type, type Static } from 'typebox';
import { IMAGE_NAME_RE } from '../daemon/store/keys.js';

/** An image name by the store's rule: no '/', no leading '.', so never a path. */
export const ImageName = Type.String({
  pattern: IMAGE_NAME_RE.source,
  minLength: 1,
  maxLength: 128,
  description: '1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit',
});

export const ImageNameParams = Type.Object({ name: ImageName }, { additionalProperties: false });

/**
 * A process id: a positive integer below the kernel's pid_max (read when the API starts), since the kernel
 * allocates pids from 1 to pid_max - 1.
 */
export function Pid(pidMax: number) {
  return Type.Integer({
    minimum: 1,
    maximum: pidMax - 1,
    description: `a process id, 1..${pidMax - 1} (below pid_max)`,
  });
}

export function DumpRequest(pidMax: number) {
  return Type.Object(
    {
      pid: Pid(pidMax),
      name: Type.Optional(ImageName),
      leaveRunning: Type.Optional(
        Type.Boolean({ description: 'Resume the tree after the dump instead of killing it (default false)' }),
      ),
    },
    { additionalProperties: false },
  );
}
export type DumpRequestBody = Static<ReturnType<typeof DumpRequest>>;

/** Any JSON object (serialized as it is). */
function Json(description?: string) {
  return Type.Unsafe<Record<string, unknown>>({
    type: 'object',
    additionalProperties: true,
    ...(description === undefined ? {} : { description }),
  });
}

export const AddressSpaceSummary = Type.Object({
  mmId: Type.String(),
  windows: Type.Integer(),
  pages: Type.Integer(),
  zeroPages: Type.Integer(),
  bytes: Type.Integer(),
});

export const ImageSummary = Type.Object({
  id: Type.String(),
  name: Type.String(),
  createdAt: Type.String(),
  committedAt: Type.String(),
  info: Json('What was dumped, by what (rootPid, comm, tool)'),
  addressSpaces: Type.Array(AddressSpaceSummary),
  windows: Type.Integer(),
  pages: Type.Integer(),
  zeroPages: Type.Integer(),
  bytes: Type.Integer(),
  chunks: Type.Integer(),
  newChunks: Type.Integer(),
  newBytes: Type.Integer(),
  sharedBytes: Type.Integer(),
  sharedFraction: Type.Number(),
  metaKeys: Type.Integer(),
});

export const ImageList = Type.Object({ images: Type.Array(ImageSummary) });

export const ImageDetail = Type.Object({
  name: Type.String(),
  id: Type.String(),
  summary: ImageSummary,
  meta: Json('Every metadata record of the image by key (docs/image-format.md); binary values as {base64}'),
});

export const RemoveResult = Type.Object({
  id: Type.String(),
  name: Type.String(),
  freedChunks: Type.Integer(),
  freedBytes: Type.Integer(),
  keptChunks: Type.Integer(),
});

export const DumpResult = Type.Object({
  job: Type.String({ description: 'The job that ran the dump (GET /v1/jobs/{id})' }),
  name: Type.String(),
  id: Type.String(),
  rootPid: Type.Integer(),
  processes: Type.Integer(),
  threads: Type.Integer(),
  vmas: Type.Integer(),
  pagesDumped: Type.Integer(),
  bytes: Type.Integer(),
  bytesStored: Type.Integer(),
  dedupRatio: Type.Union([Type.Number(), Type.Null()]),
  frozenMs: Type.Number(),
  totalMs: Type.Number(),
  writeAfterReleaseMs: Type.Number(),
  leftRunning: Type.Boolean(),
  summary: ImageSummary,
});

export const TaskStats = Type.Object({
  task: Type.Integer(),
  parent: Type.Union([Type.Integer(), Type.Null()]),
  pid: Type.Union([Type.Integer(), Type.Null()], {
    description: 'The process whose memory the task serves; null for a forked child (its fork event names no pid)',
  }),
  lazyPages: Type.Integer({ description: 'Lazy pages whose image data has not been delivered yet' }),
  faults: Type.Integer({ description: 'Page faults served' }),
  pagesCopied: Type.Integer(),
  pagesZeroed: Type.Integer(),
  events: Type.Object({ fork: Type.Integer(), remap: Type.Integer(), remove: Type.Integer(), unmap: Type.Integer() }),
});

export const TaskList = Type.Object({ tasks: Type.Array(TaskStats) });

export const JobKind = Type.Union([Type.Literal('dump'), Type.Literal('restore')]);
export const JobState = Type.Union([Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')]);

export const Job = Type.Object({
  id: Type.String(),
  kind: JobKind,
  state: JobState,
  params: Json(),
  progress: Type.Union([
    Type.Object({ phase: Type.String(), done: Type.Number(), total: Type.Number(), unit: Type.String() }),
    Type.Null(),
  ]),
  createdAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  elapsedMs: Type.Number(),
  result: Type.Union([Json(), Type.Null()]),
  error: Type.Union([
    Type.Object({ code: Type.String(), status: Type.Integer(), message: Type.String() }),
    Type.Null(),
  ]),
});

export const JobList = Type.Object({ jobs: Type.Array(Job) });
export const JobQuery = Type.Object(
  { kind: Type.Optional(JobKind), state: Type.Optional(JobState) },
  { additionalProperties: false },
);
export const JobParams = Type.Object(
  {
    id: Type.String({
      pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
      description: 'A job id',
    }),
  },
  { additionalProperties: false },
);

export const RestoreRequest = Type.Object(
  {
    image: ImageName,
    eager: Type.Optional(Type.Boolean({ description: 'Write all memory before the tree runs (default false: lazy)' })),
    prefetch: Type.Optional(
      Type.Boolean({
        description:
          'Copy lazy pages into the tasks in the background (default true); false: only the pages they touch arrive',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RestoreRequestBody = Static<typeof RestoreRequest>;

export const RestoreState = Type.Union([
  Type.Literal('restoring'),
  Type.Literal('running'),
  Type.Literal('complete'),
  Type.Literal('failed'),
]);

export const Health = Type.Object({ status: Type.Literal('ok'), pid: Type.Integer(), uptimeSeconds: Type.Number() });
export const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not ready')]),
  store: Type.Boolean(),
  pageService: Type.Boolean(),
});

/** RFC 9457 problem details, with our stable `code` and the extensions some errors carry. */
export const Problem = Type.Object(
  {
    type: Type.String({ description: 'urn:lazyrestore:problem:<code>' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    instance: Type.Optional(Type.String()),
    code: Type.String({ description: 'Stable error code (docs/api.md lists them)' }),
    errors: Type.Optional(
      Type.Array(
        Type.Object({
          in: Type.String({ description: 'body, params, querystring or headers' }),
          field: Type.String({ description: 'JSON pointer of the offending value ("" for the whole part)' }),
          message: Type.String(),
        }),
      ),
    ),
    pid: Type.Optional(Type.Integer()),
    problems: Type.Optional(
      Type.Array(
        Type.Object({ code: Type.String(), pid: Type.Integer(), what: Type.String(), message: Type.String() }),
      ),
    ),
  },
  { additionalProperties: false },
);

export const Restore = Type.Object({
  id: Type.String({ description: 'The restore, also its job (GET /v1/jobs/{id})' }),
  image: Type.String(),
  eager: Type.Boolean(),
  state: RestoreState,
  rootPid: Type.Union([Type.Integer(), Type.Null()]),
  pids: Type.Array(Type.Integer()),
  progress: Type.Object({
    tasks: Type.Integer({ description: 'Page-service tasks of this restore still served' }),
    lazyPagesLeft: Type.Integer({ description: 'Lazy pages of those tasks not delivered yet' }),
  }),
  runningMs: Type.Union([Type.Number(), Type.Null()]),
  completeMs: Type.Union([Type.Number(), Type.Null()]),
  createdAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  report: Type.Union([Json('What `lazyrestore restore` prints (completion figures null until complete)'), Type.Null()]),
  error: Type.Union([Problem, Type.Null()]),
});
export const RestoreList = Type.Object({ restores: Type.Array(Restore) });

/** The error responses every route documents. */
const problemContent = {
  description: 'Problem details (RFC 9457) with our stable `code`',
  content: { 'application/problem+json': { schema: Problem } },
};
export const problemResponses = { '4xx': problemContent, '5xx': problemContent };

export type ImageDetailBody = Static<typeof ImageDetail>;
export type ImageListBody = Static<typeof ImageList>;
export type RemoveResultBody = Static<typeof RemoveResult>;
export type DumpResultBody = Static<typeof DumpResult>;
export type TaskListBody = Static<typeof TaskList>;
export type JobBody = Static<typeof Job>;
export type JobListBody = Static<typeof JobList>;
export type HealthBody = Static<typeof Health>;
export type ReadinessBody = Static<typeof Readiness>;
export type ProblemBody = Static<typeof Problem>;
export type RestoreBody = Static<typeof Restore>;
export type RestoreListBody = Static<typeof RestoreList>;
