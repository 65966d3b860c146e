/**
 * The daemon's REST control API: one fastify instance per listener (the unix socket, and the TCP listener
 * when asked for), all serving one {@link ApiContext}. Requests are validated against the TypeBox schemas of
 * api/schemas.ts by TypeBox's own compiler (no type coercion of bodies, unknown properties rejected), every
 * failure is problem+json (api/errors.ts), and the same schemas make /openapi.json.
 */
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { ApiContext } from './context.js';
import { requireBearerToken } from './auth.js';
import { apiError, installProblemHandlers } from './errors.js';
import { dumpRoutes } from './routes/dumps.js';
import { healthRoutes } from './routes/health.js';
import { imageRoutes } from './routes/images.js';
import { jobRoutes } from './routes/jobs.js';
import { restoreRoutes } from './routes/restores.js';
import { taskRoutes } from './routes/tasks.js';

export type ApiInstance = FastifyInstance;

export interface ApiOptions {
  /** Every request must carry this bearer token (the TCP listener); none for the unix socket. */
  token?: string;
  /** A logger to share (the daemon's); else a JSON logger at `logLevel`, or none when that is 'silent'. */
  logger?: FastifyBaseLogger;
  logLevel?: string;
}

/** Largest request body: the API's requests are small JSON documents. */
const BODY_LIMIT = 64 * 1024;

function packageVersion(): string {
  // dist/api/app.js sits two levels below the package root.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function openapiOptions(token: boolean) {
  return {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'lazyrestore daemon API',
        version: packageVersion(),
        description:
          'Control API of the lazyrestore daemon (docs/api.md). Failures are application/problem+json (RFC 9457).',
      },
      ...(token
        ? {
            components: { securitySchemes: { bearer: { type: 'http' as const, scheme: 'bearer' } } },
            security: [{ bearer: [] }],
          }
        : {}),
    },
  };
}

/** Builds (and readies) the API for one listener; the caller listens and closes it. */
export async function buildApi(ctx: ApiContext, options: ApiOptions = {}): Promise<ApiInstance> {
  const logging =
    options.logger !== undefined
      ? { loggerInstance: options.logger }
      : {
          logger: options.logLevel === undefined || options.logLevel === 'silent' ? false : { level: options.logLevel },
        };
  const app = Fastify({
    ...logging,
    bodyLimit: BODY_LIMIT,
    // Shutdown answers with our own problem+json (the hook below) instead of fastify's plain 503.
    return503OnClosing: false,
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  // Bodies are JSON only: anything else is 415 rather than a string that fails validation.
  app.removeContentTypeParser('text/plain');
  installProblemHandlers(app);
  await app.register(swagger, openapiOptions(options.token !== undefined));
  if (options.token !== undefined) requireBearerToken(app, options.token);
  app.addHook('onRequest', (_request, _reply, done) => {
    done(ctx.readiness().closing ? apiError('SHUTTING_DOWN', 'the daemon is shutting down') : undefined);
  });

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  await app.register(healthRoutes, { ctx });
  await app.register(imageRoutes, { ctx, prefix: '/v1' });
  await app.register(dumpRoutes, { ctx, prefix: '/v1' });
  await app.register(restoreRoutes, { ctx, prefix: '/v1' });
  await app.register(taskRoutes, { ctx, prefix: '/v1' });
  await app.register(jobRoutes, { ctx, prefix: '/v1' });
  await app.ready();
  return app;
}
