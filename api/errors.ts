/**
 * Every failure of the API becomes an RFC 9457 problem (`application/problem+json`): `type`
 * (urn:lazyrestore:problem:<code>), `title` (the same for every problem of that code), `status`, `detail` (this
 * occurrence) and our stable `code`, the one the CLI prints. This module is the only place that decides:
 *  - schema validation failures: 400 INVALID_REQUEST, with one entry per offending field in `errors`;
 *  - our own errors (daemon/errors.ts catalogue, StoreError): their code, the catalogue's status, their message,
 *    and for dump refusals the `pid` and every `problems` entry;
 *  - other client errors fastify raises (malformed JSON, body too large, wrong content type): their status;
 *  - anything else: 500 INTERNAL_ERROR whose detail names the request id; the error and its stack go to the log
 *    only.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LazyRestoreError, type ErrorCode, type Problem as Refusal } from '../daemon/errors.js';
import { publicErrorOf } from '../daemon/jobs.js';
import { isStoreError } from '../daemon/store/errors.js';
import type { ProblemBody } from './schemas.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

export function problemType(code: string): string {
  return `urn:lazyrestore:problem:${code}`;
}

/** 'IMAGE_NOT_FOUND' -> 'Image not found'. */
export function problemTitle(code: string): string {
  const words = code.toLowerCase().replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Throws from a route or hook: a problem with one of the catalogue's codes. */
export function apiError(code: ErrorCode, detail: string): LazyRestoreError {
  return new LazyRestoreError(code, detail);
}

const INSTANCE = Symbol('problem instance');

/** Marks a failure with the URI of the resource it happened in (a job), for the problem's `instance`. */
export function withInstance(error: unknown, instance: string): unknown {
  if (typeof error === 'object' && error !== null) {
    Object.defineProperty(error, INSTANCE, { value: instance, configurable: true });
  }
  return error;
}

function instanceOf(error: unknown): string | undefined {
  const v = typeof error === 'object' && error !== null ? (error as { [INSTANCE]?: unknown })[INSTANCE] : undefined;
  return typeof v === 'string' ? v : undefined;
}

interface ValidationEntry {
  keyword?: string;
  schemaPath?: string;
  instancePath?: string;
  params?: Record<string, unknown>;
  message?: string;
}

type FieldError = NonNullable<ProblemBody['errors']>[number];

/** One entry per offending field, in the order the validator found them (duplicates dropped). */
function fieldErrors(entries: ValidationEntry[], part: string): FieldError[] {
  const out: FieldError[] = [];
  const push = (field: string, message: string) => {
    if (!out.some((e) => e.field === field && e.message === message)) out.push({ in: part, field, message });
  };
  for (const e of entries) {
    const path = e.instancePath ?? '';
    // TypeBox reports an unknown property twice: as `additionalProperties` of the object and as the `false`
    // schema at the property; the first says which property, so the second is left out.
    if (e.keyword === 'boolean' && e.schemaPath?.endsWith('/additionalProperties')) continue;
    if (e.keyword === 'additionalProperties' && Array.isArray(e.params?.['additionalProperties'])) {
      for (const name of e.params['additionalProperties'] as unknown[])
        push(`${path}/${String(name)}`, 'unknown property');
      continue;
    }
    if (e.keyword === 'required' && Array.isArray(e.params?.['requiredProperties'])) {
      for (const name of e.params['requiredProperties'] as unknown[]) push(`${path}/${String(name)}`, 'is required');
      continue;
    }
    push(path, e.message ?? 'is invalid');
  }
  return out.slice(0, 20);
}

function validationProblem(error: FastifyError): ProblemBody {
  const part = error.validationContext ?? 'request';
  const errors = fieldErrors(error.validation ?? [], part);
  const detail = errors.map((e) => `${e.in}${e.field === '' ? '' : ` ${e.field}`} ${e.message}`).join('; ');
  return problem('INVALID_REQUEST', 400, detail === '' ? `invalid ${part}` : detail, { errors });
}

function problem(code: string, status: number, detail: string, extra: Partial<ProblemBody> = {}): ProblemBody {
  return { type: problemType(code), title: problemTitle(code), status, detail, code, ...extra };
}

/** Client errors fastify raises before a handler runs, by status. */
const FASTIFY_CLIENT_CODES: Record<number, ErrorCode> = {
  400: 'INVALID_REQUEST',
  404: 'ROUTE_NOT_FOUND',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
};

function isFastifyClientError(error: unknown): error is FastifyError & { statusCode: number } {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 500;
}

/** The problem a failure becomes, and whether it deserves an error log line (unexpected ones). */
export function problemOf(error: unknown, requestId: string): { problem: ProblemBody; unexpected: boolean } {
  if (error instanceof LazyRestoreError || isStoreError(error)) {
    const p = publicErrorOf(error);
    const extra: Partial<ProblemBody> = {};
    const instance = instanceOf(error);
    if (instance !== undefined) extra.instance = instance;
    if (error instanceof LazyRestoreError) {
      if (error.pid !== undefined) extra.pid = error.pid;
      if (error.problems !== undefined) extra.problems = error.problems.map((r: Refusal) => ({ ...r }));
    }
    return { problem: problem(p.code, p.status, p.message, extra), unexpected: p.status >= 500 };
  }
  if ((error as FastifyError | null)?.validation !== undefined) {
    return { problem: validationProblem(error as FastifyError), unexpected: false };
  }
  if (isFastifyClientError(error)) {
    const code = FASTIFY_CLIENT_CODES[error.statusCode] ?? 'INVALID_REQUEST';
    return { problem: problem(code, error.statusCode, error.message), unexpected: false };
  }
  const detail = `internal error (request ${requestId}; the daemon log has the details)`;
  const instance = instanceOf(error);
  return {
    problem: problem('INTERNAL_ERROR', 500, detail, instance === undefined ? {} : { instance }),
    unexpected: true,
  };
}

export function sendProblem(reply: FastifyReply, p: ProblemBody): FastifyReply {
  if (p.status === 401) reply.header('www-authenticate', 'Bearer realm="lazyrestore"');
  return reply.code(p.status).type(PROBLEM_CONTENT_TYPE).send(p);
}

/** Installs the error and not-found handlers on the root instance (before any route plugin). */
export function installProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const { problem: p, unexpected } = problemOf(error, request.id);
    if (unexpected) request.log.error({ err: error }, `request failed: ${p.code}`);
    else request.log.info({ code: p.code, status: p.status }, p.detail);
    return sendProblem(reply, p);
  });
  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) =>
    sendProblem(reply, problem('ROUTE_NOT_FOUND', 404, `no route for ${request.method} ${request.url}`)),
  );
}
