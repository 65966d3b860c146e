/**
 * Bearer-token authentication of the TCP listener. The unix socket needs none: its file mode (0600, or 0660
 * for a group) is the access check, done by the kernel at connect(2).
 *
 * The token comes from a file that only its owner may read (the daemon refuses one that group or others can
 * read or write, as ssh does for keys), so it never appears on a command line or in `ps`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LazyRestoreError } from '../daemon/errors.js';
import { apiError } from './errors.js';

/** Fewer bytes than this is too easy to guess. */
export const MIN_TOKEN_LENGTH = 16;

/** Reads the token (the file's content without surrounding whitespace), refusing a weak or exposed one. */
export function readTokenFile(path: string): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new LazyRestoreError('INVALID_ARGUMENT', `cannot read token file ${path}: ${reason}`, { cause: e });
  }
  if ((mode & 0o077) !== 0) {
    throw new LazyRestoreError(
      'INVALID_ARGUMENT',
      `token file ${path} is accessible to group or others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`,
    );
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new LazyRestoreError(
      'INVALID_ARGUMENT',
      `token file ${path} must hold one token of at least ${MIN_TOKEN_LENGTH} characters without spaces`,
    );
  }
  return token;
}

/** Compares in time independent of where the strings differ and of their lengths (both are hashed first). */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function presentedToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m === null ? null : m[1]!;
}

/** Every request must carry `Authorization: Bearer <token>`, or it gets 401 before routing does anything. */
export function requireBearerToken(app: FastifyInstance, token: string): void {
  app.addHook('onRequest', (request, _reply, done) => {
    const presented = presentedToken(request);
    if (presented === null) done(apiError('UNAUTHORIZED', 'this listener needs Authorization: Bearer <token>'));
    else if (!tokenMatches(presented, token)) done(apiError('UNAUTHORIZED', 'the bearer token is not valid'));
    else done();
  });
}
